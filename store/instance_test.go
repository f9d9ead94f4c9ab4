package store

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"
)

// instances opens n stores on one database, each a live instance (as n
// gateway processes sharing it).
func instances(t *testing.T, n int) []*Store {
	t.Helper()
	url := testDB(t)
	var out []*Store
	for range n {
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.JoinInstances(context.Background(), time.Hour); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func holder(t *testing.T, s *Store, domain, jid string) string {
	t.Helper()
	h, err := s.UserHolder(context.Background(), domain, jid)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func claim(t *testing.T, s *Store, domain, jid string) bool {
	t.Helper()
	ok, err := s.ClaimUser(context.Background(), domain, jid)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// A user held by a live instance is handed over only when the holder
// lets go; the instance that asked then holds it, whether it asks again
// (ClaimUser) or finds it handed over (AdoptUsers).
func TestUserLeaseTakeover(t *testing.T) {
	ctx := context.Background()
	st := instances(t, 2)
	a, b := st[0], st[1]
	if a.Instance() == b.Instance() {
		t.Fatal("two stores, one instance name")
	}
	if !claim(t, a, "d", "u@x") || !claim(t, a, "d", "u@x") {
		t.Fatal("a free user was not claimed")
	}
	if w, _ := a.WantedUsers(ctx, "d"); len(w) != 0 {
		t.Fatalf("wanted before anyone asked: %v", w)
	}
	if claim(t, b, "d", "u@x") {
		t.Fatal("a user held by a live instance was taken")
	}
	if h := holder(t, b, "d", "u@x"); h != a.Instance() {
		t.Fatalf("holder %q after b asked, want a", h)
	}
	// The same user on another bridge is another lease.
	if !claim(t, b, "e", "u@x") {
		t.Fatal("the lease of another domain was refused")
	}
	w, err := a.WantedUsers(ctx, "d")
	if err != nil || !slices.Equal(w, []string{"u@x"}) {
		t.Fatalf("a sees wanted %v, %v", w, err)
	}
	if w, _ := b.WantedUsers(ctx, "d"); len(w) != 0 {
		t.Fatalf("b sees wanted %v", w)
	}
	if err := a.ReleaseUser(ctx, "d", "u@x"); err != nil {
		t.Fatal(err)
	}
	if claim(t, a, "d", "u@x") {
		t.Fatal("a took back the user it handed over")
	}
	// a asked again: b, now the holder, is asked; it takes it up first.
	if !claim(t, b, "d", "u@x") {
		t.Fatal("the user handed over is not b's")
	}
	if err := b.ReleaseUser(ctx, "d", "u@x"); err != nil {
		t.Fatal(err)
	}
	// b handed it to a, which asked; a finds it at its renewal.
	got, err := a.AdoptUsers(ctx, "d")
	if err != nil || !slices.Equal(got, []string{"u@x"}) {
		t.Fatalf("a adopted %v, %v; want the user handed over", got, err)
	}
	if got, _ := a.AdoptUsers(ctx, "d"); len(got) != 0 {
		t.Fatalf("adopted again: %v", got)
	}
	// Released with nobody asking: free for the first to adopt it.
	if err := a.ReleaseUser(ctx, "d", "u@x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.AdoptUsers(ctx, "d"); !slices.Equal(got, []string{"u@x"}) {
		t.Fatalf("b adopted %v; want the released user", got)
	}
	if got, _ := a.AdoptUsers(ctx, "d"); len(got) != 0 {
		t.Fatalf("a adopted %v after b", got)
	}
}

// The leases of an instance that stopped are free at once; those of one
// whose lease ended, once a live instance removed its row; that instance
// then learns at its renewal that it lost them.
func TestUserLeaseExpiry(t *testing.T) {
	ctx := context.Background()
	st := instances(t, 3)
	a, b, c := st[0], st[1], st[2]
	for _, u := range []string{"1@x", "2@x"} {
		if !claim(t, a, "d", u) {
			t.Fatal("not claimed")
		}
	}
	if !claim(t, c, "d", "3@x") {
		t.Fatal("not claimed")
	}
	// A clean stop.
	if err := a.LeaveInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if !claim(t, b, "d", "1@x") {
		t.Fatal("the user of a stopped instance was not taken")
	}
	if got, err := b.AdoptUsers(ctx, "d"); err != nil || !slices.Equal(got, []string{"2@x"}) {
		t.Fatalf("b adopted %v, %v; want the stopped instance's other user", got, err)
	}
	// c's lease ends (it renews for a lease already over: as if it had
	// been stopped with SIGKILL, or frozen).
	if ok, err := c.RenewInstance(ctx, -time.Second); err != nil || !ok {
		t.Fatalf("renewal: %v, %v", ok, err)
	}
	if claim(t, b, "d", "3@x") {
		t.Fatal("a user was taken while its holder's row is there")
	}
	if n, err := b.ReapInstances(ctx); err != nil || n != 1 {
		t.Fatalf("reaped %d, %v; want c", n, err)
	}
	if live, _ := b.LiveInstances(ctx); !slices.Equal(live, []string{b.Instance()}) {
		t.Fatalf("live instances %v, want b alone", live)
	}
	if got, err := b.AdoptUsers(ctx, "d"); err != nil || !slices.Equal(got, []string{"3@x"}) {
		t.Fatalf("b adopted %v, %v; want c's user", got, err)
	}
	if ok, err := c.RenewInstance(ctx, time.Hour); err != nil || ok {
		t.Fatalf("c renewed a lease it lost: %v, %v", ok, err)
	}
	old := c.Instance()
	if err := c.RejoinInstances(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if c.Instance() == old {
		t.Fatal("rejoined under the same name")
	}
	if ok, err := c.RenewInstance(ctx, time.Hour); err != nil || !ok {
		t.Fatalf("renewal after rejoining: %v, %v", ok, err)
	}
	if claim(t, c, "d", "3@x") {
		t.Fatal("c took back a user b holds")
	}
}

// At start an instance claims only the users no live instance holds.
func TestClaimUsers(t *testing.T) {
	ctx := context.Background()
	st := instances(t, 2)
	a, b := st[0], st[1]
	if !claim(t, a, "d", "held@x") {
		t.Fatal("not claimed")
	}
	var users []string
	for i := range 1200 { // more than one statement's worth
		users = append(users, fmt.Sprintf("u%d@x", i))
	}
	users = append(users, "held@x", "u1@x")
	got, err := b.ClaimUsers(ctx, "d", users)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1200 || slices.Contains(got, "held@x") {
		t.Fatalf("b claimed %d users (held@x among them: %v), want the 1200 free ones", len(got), slices.Contains(got, "held@x"))
	}
	if w, _ := a.WantedUsers(ctx, "d"); len(w) != 0 {
		t.Fatalf("a claim at start asked for a held user: %v", w)
	}
	if got, _ := b.ClaimUsers(ctx, "d", []string{"u5@x"}); !slices.Equal(got, []string{"u5@x"}) {
		t.Fatalf("claiming its own user again: %v", got)
	}
	if got, _ := a.ClaimUsers(ctx, "d", []string{"u5@x", "held@x"}); !slices.Equal(got, []string{"held@x"}) {
		t.Fatalf("a claimed %v, want only its own", got)
	}
}

// Instances sharing the database each send the stanzas they wrote, once;
// the stanzas of one that stopped are adopted, in order, by another.
func TestOutboxOwners(t *testing.T) {
	ctx := context.Background()
	if cluster == nil {
		// One process: it sends the whole outbox.
		s := instances(t, 1)[0]
		if err := s.EnqueueStanzas(ctx, "d", []string{"<a/>"}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.AdoptStanzas(ctx, "d"); err != nil || n != 0 {
			t.Fatalf("adopted %d, %v on SQLite", n, err)
		}
		if n, _ := s.CountOwnStanzas(ctx, "d"); n != 1 {
			t.Fatalf("%d own stanzas, want 1", n)
		}
		return
	}
	st := instances(t, 2)
	const per = 300
	var mu sync.Mutex
	sent := map[string]string{}
	var wg sync.WaitGroup
	for i, s := range st {
		name := string(rune('a' + i))
		wg.Go(func() {
			for k := range per {
				if err := s.EnqueueStanzas(ctx, "d", []string{fmt.Sprintf("<m %s='%d'/>", name, k)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			var after int64
			for n := 0; n < per; {
				items, err := s.PendingStanzasAfter(ctx, "d", after, 50)
				if err != nil {
					t.Error(err)
					return
				}
				if len(items) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				mu.Lock()
				for _, it := range items {
					if by, ok := sent[it.Stanza]; ok {
						t.Errorf("%s sent by %s and %s", it.Stanza, by, name)
					}
					sent[it.Stanza] = name
				}
				mu.Unlock()
				n += len(items)
				after = items[len(items)-1].ID
				if err := s.StanzasSentThrough(ctx, "d", after); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(sent) != 2*per {
		t.Fatalf("%d stanzas sent, want %d", len(sent), 2*per)
	}
	for st, by := range sent {
		if st[3:4] != by {
			t.Fatalf("%s sent by %s, not by its writer", st, by)
		}
	}
	a, b := st[0], st[1]
	// b has sent a stanza up to some id; a writes more and stops.
	if err := b.EnqueueStanzas(ctx, "d", []string{"<b1/>"}); err != nil {
		t.Fatal(err)
	}
	bItems, _ := b.PendingStanzasAfter(ctx, "d", 0, 10)
	if len(bItems) != 1 {
		t.Fatalf("b has %d pending", len(bItems))
	}
	if err := a.EnqueueStanzas(ctx, "d", []string{"<x1/>", "<x2/>", "<x3/>"}); err != nil {
		t.Fatal(err)
	}
	if err := a.EnqueueStanzas(ctx, "e", []string{"<y1/>"}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.AdoptStanzas(ctx, "d"); err != nil || n != 0 {
		t.Fatalf("b adopted %d, %v from a live instance", n, err)
	}
	// a's removal of what it sent never takes b's rows.
	if err := a.StanzasSentThrough(ctx, "d", bItems[0].ID+1000); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.CountOwnStanzas(ctx, "d"); n != 1 {
		t.Fatalf("b has %d stanzas after a's removal, want 1", n)
	}
	if err := a.EnqueueStanzas(ctx, "d", []string{"<x1/>", "<x2/>", "<x3/>"}); err != nil {
		t.Fatal(err)
	}
	if err := a.LeaveInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := b.AdoptStanzas(ctx, "d"); err != nil || n != 3 {
		t.Fatalf("b adopted %d, %v; want a's 3", n, err)
	}
	items, err := b.PendingStanzasAfter(ctx, "d", bItems[0].ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Stanza)
	}
	if !slices.Equal(got, []string{"<x1/>", "<x2/>", "<x3/>"}) {
		t.Fatalf("b reads after its last %v, want a's in order", got)
	}
	if n, _ := b.CountOwnStanzas(ctx, "e"); n != 0 {
		t.Fatalf("another domain's stanzas were adopted with d's: %d", n)
	}
	if n, _ := b.AdoptStanzas(ctx, "e"); n != 1 {
		t.Fatalf("adopted %d of e, want 1", n)
	}
}

// An instance on this node whose process is gone (killed) is removed at
// once, its lease notwithstanding; one elsewhere waits for its lease.
func TestReapGoneProcess(t *testing.T) {
	if node() == "" {
		t.Skip("no node name here")
	}
	ctx := context.Background()
	s := instances(t, 1)[0]
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	far := time.Now().Add(time.Hour).UnixMilli()
	for _, r := range []struct {
		id, node string
		pid      int
	}{{"killed", node(), dead}, {"elsewhere", "another-node", dead}, {"alive", node(), os.Getpid()}} {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO instances (id, node, pid, started, expires) VALUES (?, ?, ?, ?, ?)`, r.id, r.node, r.pid, 0, far); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.ReapInstances(ctx); err != nil || n != 1 {
		t.Fatalf("reaped %d, %v; want the killed one", n, err)
	}
	live, _ := s.LiveInstances(ctx)
	if slices.Contains(live, "killed") || !slices.Contains(live, "elsewhere") || !slices.Contains(live, "alive") || !slices.Contains(live, s.Instance()) {
		t.Fatalf("live instances %v", live)
	}
}

// An instance whose process is gone shows at once among the absent ones,
// its row still there; a live one, and one that took a new name and
// showed its presence again, do not. On SQLite nobody is ever absent.
func TestInstancePresence(t *testing.T) {
	ctx := context.Background()
	st := instances(t, 3)
	a, b, c := st[0], st[1], st[2]
	for _, s := range st[:2] {
		if err := s.ShowPresence(ctx); err != nil {
			t.Fatal(err)
		}
	}
	absent := func() []string {
		t.Helper()
		ps, err := a.Presences(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for id, present := range ps {
			if !present {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	if cluster == nil {
		b.Close()
		if ids := absent(); len(ids) != 0 {
			t.Fatalf("SQLite: absent %v", ids)
		}
		return
	}
	// c never showed its presence (an older gateway): absent all along.
	if ps, err := a.Presences(ctx); err != nil || len(ps) != 2 {
		t.Fatalf("presences %v, %v: want b's and c's", ps, err)
	}
	if got, want := absent(), []string{c.Instance()}; !slices.Equal(got, want) {
		t.Fatalf("absent %v, want %v", got, want)
	}
	// A second call keeps the session (and the lock).
	if err := b.ShowPresence(ctx); err != nil {
		t.Fatal(err)
	}
	old := b.Instance()
	if err := b.RejoinInstances(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := absent(); !slices.Contains(got, b.Instance()) {
		t.Fatalf("b's new name is not absent before b shows it: %v", got)
	}
	if err := b.ShowPresence(ctx); err != nil {
		t.Fatal(err)
	}
	if got := absent(); slices.Contains(got, b.Instance()) || slices.Contains(got, old) {
		t.Fatalf("b absent under its new name or its old one: %v", got)
	}
	// b's process ends without leaving (killed): its sessions close.
	// The server ends them a moment later.
	id := b.Instance()
	b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for got := absent(); !slices.Contains(got, id); got = absent() {
		if time.Now().After(deadline) {
			t.Fatalf("the killed instance is not absent: %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	live, err := a.LiveInstances(ctx)
	if err != nil || !slices.Contains(live, id) {
		t.Fatalf("the killed instance's row is gone before its lease: %v %v", live, err)
	}
}
