package email

import "testing"

func TestSenderName(t *testing.T) {
	for _, tc := range []struct{ raw, addr, want string }{
		{"From: Bob Example <bob@example.com>\r\n\r\nhi", "bob@example.com", "Bob Example"},
		{"From: =?utf-8?q?Zo=C3=A9?= <zoe@example.com>\r\n\r\nhi", "zoe@example.com", "Zoé"},
		{"From: bob@example.com\r\n\r\nhi", "bob@example.com", "bob@example.com"},
		{"From: Bob <bob@example.com>\r\n\r\nhi", "bounces@example.com", "bounces@example.com"}, // the envelope sender
		{"From: <<<\r\n\r\nhi", "bob@example.com", "bob@example.com"},
		{"no header at all", "bob@example.com", "bob@example.com"},
	} {
		if got := senderName([]byte(tc.raw), tc.addr); got != tc.want {
			t.Errorf("senderName(%q, %q) = %q, want %q", tc.raw, tc.addr, got, tc.want)
		}
	}
}
