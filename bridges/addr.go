package bridges

import (
	"context"
	"fmt"
	"net/netip"
)

// Resolver looks host names up; *net.Resolver is one (tests give their own).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// PrivateAddrError is a host a user named that resolves to an address the
// gateway does not connect to (see PrivateAddr).
type PrivateAddrError struct {
	Host string
	IP   netip.Addr
}

func (e *PrivateAddrError) Error() string {
	return "connections to the private address " + e.IP.String() + " are not allowed on this gateway"
}

// PrivateAddr reports whether ip is loopback, private, link-local,
// unspecified, multicast or shared (100.64.0.0/10): addresses of the
// gateway's own networks, which users may not make it reach.
func PrivateAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() ||
		sharedSpace.Contains(ip)
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// ResolvePublic resolves host (an IP literal stands for itself) and
// returns its addresses. When allowPrivate is false and any of them is
// private, it returns a *PrivateAddrError: a name with one private address
// among public ones is refused as a whole. Callers connect to the returned
// addresses, never to the name again, so that a second lookup cannot lead
// elsewhere.
func ResolvePublic(ctx context.Context, r Resolver, host string, allowPrivate bool) ([]netip.Addr, error) {
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		ips, err = r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("failed to resolve %s: %w", host, err)
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("failed to resolve %s: no address", host)
	}
	for i, ip := range ips {
		ips[i] = ip.Unmap()
		if !allowPrivate && PrivateAddr(ip) {
			return nil, &PrivateAddrError{Host: host, IP: ips[i]}
		}
	}
	return ips, nil
}
