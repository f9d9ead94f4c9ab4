package mapping

import (
	"context"
	"errors"

	"passerelle/store"
)

// FoldLocal returns the localpart as the XMPP server will deliver it back to
// the component (lower-cased, NFKC-normalised, stringprep's "mapped to
// nothing" characters removed). Identities are stored under this key.
func FoldLocal(local string) string { return serverFold(local) }

// Identities keeps the foreign spelling of identities whose JID localparts
// the XMPP server folds: bob%Example.com and BOB%example.com both reach the
// gateway as bob%example.com, and the stored spelling says which mailbox,
// nick or channel the user meant.
type Identities struct {
	st     *store.Store
	domain string
}

// NewIdentities returns the identity map of one component domain.
func NewIdentities(st *store.Store, domain string) *Identities {
	return &Identities{st: st, domain: domain}
}

// Remember records that local (a localpart the gateway hands out) stands
// for the foreign identity foreign, spelled exactly as the foreign network
// spells it.
func (m *Identities) Remember(ctx context.Context, local, foreign string) error {
	return m.st.PutIdentity(ctx, m.domain, FoldLocal(local), foreign)
}

// Foreign returns the remembered spelling for a localpart as delivered by
// the server; ok is false when none was remembered (the caller then decodes
// the localpart itself).
func (m *Identities) Foreign(ctx context.Context, local string) (foreign string, ok bool, err error) {
	f, err := m.st.Identity(ctx, m.domain, FoldLocal(local))
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return f, true, nil
}
