package harness

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

func TestDNS(t *testing.T) {
	d := StartDNS(t)
	long := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 400)
	d.SetTXT("_dmarc.Corp.Example", "v=DMARC1; p=reject")
	d.SetTXT("s1._domainkey.corp.example", long)
	var dialer net.Dialer
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, d.Addr())
	}}
	ctx := context.Background()
	if got, err := r.LookupTXT(ctx, "_dmarc.corp.example."); err != nil || len(got) != 1 || got[0] != "v=DMARC1; p=reject" {
		t.Fatalf("TXT: %q, %v", got, err)
	}
	if got, err := r.LookupTXT(ctx, "s1._domainkey.corp.example."); err != nil || len(got) != 1 || got[0] != long {
		t.Fatalf("long TXT: %q, %v", got, err)
	}
	_, err := r.LookupTXT(ctx, "nothing.example.")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("unknown name: %v", err)
	}
	if d.Asked("_dmarc.corp.example") != 1 {
		t.Fatalf("asked %d times", d.Asked("_dmarc.corp.example"))
	}
}
