package irc

import (
	"context"
	"time"

	"passerelle/store"
)

// ircStore is what the bridge keeps in the database; *store.Store is one,
// by concern:
type ircStore interface {
	settingsStore
	archiveStore
	casemapStore
	stsStore
	contactStore
}

var _ ircStore = (*store.Store)(nil)

// settingsStore keeps the users' settings of networks and channels.
type settingsStore interface {
	IRCNetworkSettings(ctx context.Context, user, server string) ([]byte, error)
	PutIRCNetworkSettings(ctx context.Context, user, server string, settings []byte) error
	IRCChannelSettings(ctx context.Context, user, server, key string) (store.IRCChannelSettings, error)
	PutIRCChannelSettings(ctx context.Context, user, server, key, name string, cs store.IRCChannelSettings) error
	PutIRCChannelNick(ctx context.Context, user, server, key, name, nick string) error
	PersistentIRCChannels(ctx context.Context, users ...string) ([]store.IRCRejoin, error)
}

// archiveStore keeps the channels' history.
type archiveStore interface {
	ArchiveIRCLine(ctx context.Context, l store.IRCLine) (store.ArchivedLine, error)
	QueryIRCArchive(ctx context.Context, q store.IRCArchiveQuery) ([]store.IRCMessage, bool, error)
	PruneIRCArchive(ctx context.Context, keep int) (int64, error)
	OpenIRCWindow(ctx context.Context, user, server, channel string) (int64, error)
	CloseIRCWindow(ctx context.Context, user, server, channel string) error
	CloseIRCWindows(ctx context.Context, domain string) error
}

// casemapStore keeps the case mapping of each server's stored keys.
type casemapStore interface {
	IRCCasemap(ctx context.Context, server string) (string, error)
	RekeyIRCServer(ctx context.Context, server, cm string, fold func(string) string) (map[store.IRCChannelRef]store.IRCChannelSettings, error)
}

// stsStore keeps the servers' strict transport security policies.
type stsStore interface {
	PutSTSPolicy(ctx context.Context, host string, port int, d time.Duration, t time.Time) error
	RescheduleSTSPolicy(ctx context.Context, host string, t time.Time) error
	STSPolicyAt(ctx context.Context, host string, t time.Time) (*store.STSPolicy, error)
}

// contactStore reads the users' contacts, whose presence is watched.
type contactStore interface {
	Contacts(ctx context.Context, domain, jid string) ([]store.Contact, error)
}
