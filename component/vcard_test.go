package component

import (
	"context"
	"testing"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// profileBridge answers Profile later, from another turn of the user's
// goroutine, as a bridge does that asks the foreign network.
type profileBridge struct {
	fakeBridge
	handled chan string
}

func (b *profileBridge) Profile(ctx context.Context, u *bridges.User, local string, answer func(context.Context, *bridges.Profile, error)) {
	b.host.Post(u.JID, func(ctx context.Context) {
		switch local {
		case "named":
			answer(ctx, &bridges.Profile{Nick: "named", Name: "Its Own Name"}, nil)
		case "plain":
			answer(ctx, &bridges.Profile{Nick: "plain"}, nil)
		case "missing":
			answer(ctx, nil, stanza.Errorf("item-not-found", "no such nick"))
		default:
			answer(ctx, nil, nil)
		}
	})
}

func (b *profileBridge) Handle(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	b.handled <- st.Attr("id")
}

// A vCard answered once the bridge has its profile: FN is the contact's
// own name, else its roster name; an error is answered as such; a nil
// profile goes to the bridge's Handle.
func TestContactVCardAsync(t *testing.T) {
	srv := newFakeServer(t, "s")
	b := &profileBridge{handled: make(chan string, 1)}
	_, _, st := startComponent(t, srv, b, "s")
	fc := srv.accept(t)
	ctx := context.Background()
	for _, local := range []string{"named", "plain"} {
		c := store.Contact{Domain: "test.example.org", JID: "alice@example.org", Contact: local + "@test.example.org", Name: "roster " + local, State: store.ContactAdded}
		if err := st.PutContact(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	ask := func(id, local string) *xmlel.Element {
		t.Helper()
		fc.send(t, `<iq type='get' id='%s' from='alice@example.org/phone' to='%s@test.example.org'><vCard xmlns='vcard-temp'/></iq>`, id, local)
		return fc.expect(t, "the answer "+id, func(e *xmlel.Element) bool { return e.Attr("id") == id })
	}
	if v := ask("v1", "named").Child(stanza.NSVCard, "vCard"); v.ChildText(stanza.NSVCard, "FN") != "Its Own Name" || v.ChildText(stanza.NSVCard, "NICKNAME") != "named" {
		t.Fatalf("vCard %s", v)
	}
	if v := ask("v2", "plain").Child(stanza.NSVCard, "vCard"); v.ChildText(stanza.NSVCard, "FN") != "roster plain" {
		t.Fatalf("vCard %s", v)
	}
	if r := ask("v3", "missing"); r.Attr("type") != "error" || stanza.ErrorOf(r).Condition != "item-not-found" {
		t.Fatalf("answer %s", r)
	}
	fc.send(t, `<iq type='get' id='v4' from='alice@example.org/phone' to='room@test.example.org'><vCard xmlns='vcard-temp'/></iq>`)
	if id := <-b.handled; id != "v4" {
		t.Fatalf("Handle got %s", id)
	}
}
