package mapping

import (
	"context"
	"testing"

	"passerelle/store"
)

func TestIdentitiesKeepSpelling(t *testing.T) {
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	m := NewIdentities(st, "mail.example.org")
	local, err := EmailToLocal("Bob.Smith@Example.COM")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Remember(ctx, local, "Bob.Smith@Example.COM"); err != nil {
		t.Fatal(err)
	}
	// The server hands the localpart back folded.
	for _, delivered := range []string{local, FoldLocal(local), "BOB.SMITH%EXAMPLE.COM"} {
		f, ok, err := m.Foreign(ctx, delivered)
		if err != nil || !ok || f != "Bob.Smith@Example.COM" {
			t.Errorf("Foreign(%q) = %q, %v, %v", delivered, f, ok, err)
		}
	}
	if _, ok, err := m.Foreign(ctx, "nobody%example.com"); ok || err != nil {
		t.Errorf("unknown identity: ok=%v err=%v", ok, err)
	}
	// Another component's map is separate.
	if _, ok, _ := NewIdentities(st, "irc.example.org").Foreign(ctx, local); ok {
		t.Error("identity leaked across domains")
	}
	if got := FoldLocal("Straße\u00AD%Example.org"); got != "strasse%example.org" {
		t.Errorf("FoldLocal = %q", got)
	}
}
