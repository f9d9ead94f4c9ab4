package bridges

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// fakeResolver answers from a fixed table.
type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ips, ok := r[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	return append([]netip.Addr(nil), ips...), nil
}

func TestResolvePublic(t *testing.T) {
	ip := netip.MustParseAddr
	r := fakeResolver{
		"public.test": {ip("203.0.113.7"), ip("2001:db8::7")},
		"mixed.test":  {ip("203.0.113.7"), ip("10.1.2.3")},
		"mapped.test": {ip("::ffff:127.0.0.1")},
	}
	for _, tc := range []struct {
		host    string
		private string // the refused address, "" when accepted
	}{
		{"public.test", ""},
		{"203.0.113.9", ""},
		{"mixed.test", "10.1.2.3"},
		{"mapped.test", "127.0.0.1"},
		{"127.0.0.1", "127.0.0.1"},
		{"::1", "::1"},
		{"192.168.1.1", "192.168.1.1"},
		{"172.16.0.1", "172.16.0.1"},
		{"169.254.169.254", "169.254.169.254"},
		{"fe80::1", "fe80::1"},
		{"fd00::1", "fd00::1"},
		{"0.0.0.0", "0.0.0.0"},
		{"::", "::"},
		{"224.0.0.1", "224.0.0.1"},
		{"ff02::1", "ff02::1"},
		{"100.64.0.1", "100.64.0.1"},
	} {
		ips, err := ResolvePublic(context.Background(), r, tc.host, false)
		var pe *PrivateAddrError
		switch {
		case tc.private == "" && err != nil:
			t.Errorf("%s: %v", tc.host, err)
		case tc.private == "" && len(ips) == 0:
			t.Errorf("%s: no address", tc.host)
		case tc.private != "" && (!errors.As(err, &pe) || pe.IP.String() != tc.private):
			t.Errorf("%s: got %v, %v; want %s refused", tc.host, ips, err, tc.private)
		}
		if tc.private != "" {
			if ips, err := ResolvePublic(context.Background(), r, tc.host, true); err != nil || len(ips) == 0 {
				t.Errorf("%s allowed: got %v, %v", tc.host, ips, err)
			}
		}
	}
	if _, err := ResolvePublic(context.Background(), r, "unknown.test", true); err == nil {
		t.Error("an unknown name resolved")
	}
}
