package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
)

// A burst of concurrent queries on a database file shares at most
// maxConns connections instead of opening one per caller.
func TestConnectionsBounded(t *testing.T) {
	sqliteOnly(t)
	s, err := Open(filepath.Join(t.TempDir(), "pool.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				errs <- err
				return
			}
			defer tx.Rollback()
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM registrations`).Scan(&n); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.DB().Stats()
	if st.MaxOpenConnections != maxConns || st.OpenConnections > maxConns {
		t.Fatalf("connections: max %d open %d, want at most %d", st.MaxOpenConnections, st.OpenConnections, maxConns)
	}
}
