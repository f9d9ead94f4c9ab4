package bridges

import "net"

// QuickACK returns nc, on Linux with its TCP acknowledgements sent as soon
// as data is read rather than delayed (TCP_QUICKACK, which the kernel
// clears again by itself, so it is set after every read). A peer that
// leaves Nagle's algorithm on (Prosody's default, ngircd) holds each small
// write until the previous one is acknowledged; with a delayed
// acknowledgement that is up to 40 ms on a stream whose reader has nothing
// to send back at once.
func QuickACK(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	return &quickACKConn{TCPConn: tc, set: func() { _ = rc.Control(setQuickACK) }}
}

type quickACKConn struct {
	*net.TCPConn
	set func()
}

func (c *quickACKConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if n > 0 {
		c.set()
	}
	return n, err
}
