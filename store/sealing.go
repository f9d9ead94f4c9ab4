package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SealerReport says what OpenSealer found and did.
type SealerReport struct {
	KDF      string   // the key derivation in use ("" without a key)
	Created  bool     // the key was recorded in the database at this start
	Resealed int      // values of the first format re-sealed with their binding
	Kept     []string // values of the first format the key does not open, left as they were
}

// OpenSealer returns the Sealer for PASSERELLE_STORE_KEY key, checked
// against the database. It fails with ErrWrongKey, before changing
// anything, when key does not open the database's secrets: a key recorded
// earlier does not open the stored check value; the first time, none of
// the values sealed by the previous version opens; or there is no key
// while sealed values exist. The first time, it records the key's
// derivation, a random salt and the check value.
//
// In the same transaction it re-seals the values of the first format
// ("sealed:v1:", no binding) in the registrations of every domain and, when
// ircDomain is set, in the IRC network settings, binding each to its
// domain, user and field.
func (s *Store) OpenSealer(ctx context.Context, key, ircDomain string) (*Sealer, SealerReport, error) {
	var rep SealerReport
	if key == "" {
		n, err := s.countSealed(ctx)
		if err != nil {
			return nil, rep, err
		}
		if n > 0 {
			return nil, rep, fmt.Errorf("%w: it is not set, and %d stored registrations or network settings hold sealed values", ErrWrongKey, n)
		}
		return &Sealer{}, rep, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, rep, fmt.Errorf("failed to begin reading the store key: %w", err)
	}
	defer tx.Rollback()
	var check string
	var salt []byte
	err = tx.QueryRowContext(ctx, `SELECT kdf, salt, check_value FROM sealing WHERE id = 1`).Scan(&rep.KDF, &salt, &check)
	rep.Created = errors.Is(err, sql.ErrNoRows)
	switch {
	case rep.Created:
		rep.KDF = kdfFor(key)
		salt = make([]byte, saltSize)
		rand.Read(salt) // never fails (it crashes the program instead)
	case err != nil:
		return nil, rep, fmt.Errorf("failed to read the store key's derivation: %w", err)
	}
	k, err := deriveKey(key, rep.KDF, salt)
	if err != nil {
		return nil, rep, err
	}
	sl := &Sealer{aead: newGCM(k), v1: v1AEAD(key)}
	if !rep.Created {
		if v, err := sl.Open(check, keyCheckBinding); err != nil || v != keyCheck {
			return nil, rep, fmt.Errorf("%w: it is not the key the database was sealed with", ErrWrongKey)
		}
	}
	if err := rep.reseal(ctx, tx, sl, ircDomain); err != nil {
		return nil, rep, err
	}
	if rep.Created && rep.Resealed == 0 && len(rep.Kept) > 0 {
		return nil, rep, fmt.Errorf("%w: none of the %d values sealed by the previous version opens with it", ErrWrongKey, len(rep.Kept))
	}
	if rep.Created {
		_, err := tx.ExecContext(ctx, `INSERT INTO sealing (id, kdf, salt, check_value) VALUES (1, ?, ?, ?)`,
			rep.KDF, salt, sl.Seal(keyCheck, keyCheckBinding))
		if err != nil {
			return nil, rep, fmt.Errorf("failed to record the store key's derivation: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, rep, fmt.Errorf("failed to commit the re-sealed values: %w", err)
	}
	return sl, rep, nil
}

// countSealed counts the rows holding sealed values.
func (s *Store) countSealed(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM registrations WHERE fields LIKE '%"sealed:%') +
		(SELECT count(*) FROM irc_networks WHERE settings LIKE '%"sealed:%')`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("failed to look for sealed values: %w", err)
	}
	return n, nil
}

// sealedRow is a row whose JSON object holds values of the first format.
type sealedRow struct {
	a, b string // the row's key
	json string
}

// sealedTable is a table with sealed values in a JSON object column.
type sealedTable struct {
	query, update string                                  // select (a, b, json) rows holding v1 values; update json by (a, b)
	bind          func(r sealedRow, field string) Binding // the binding of a value of r
}

// reseal re-seals the first format's values of both tables within tx.
func (rep *SealerReport) reseal(ctx context.Context, tx *sql.Tx, sl *Sealer, ircDomain string) error {
	tables := []sealedTable{{
		`SELECT domain, jid, fields FROM registrations WHERE fields LIKE '%"sealed:v1:%'`,
		`UPDATE registrations SET fields = ? WHERE domain = ? AND jid = ?`,
		func(r sealedRow, field string) Binding { return Binding{Domain: r.a, JID: r.b, Field: field} },
	}}
	if ircDomain != "" {
		tables = append(tables, sealedTable{
			`SELECT jid, server, settings FROM irc_networks WHERE settings LIKE '%"sealed:v1:%'`,
			`UPDATE irc_networks SET settings = ? WHERE jid = ? AND server = ?`,
			func(r sealedRow, field string) Binding {
				return Binding{Domain: ircDomain, JID: r.a, Field: NetworkField(r.b, field)}
			},
		})
	}
	for _, t := range tables {
		rows, err := sealedRows(ctx, tx, t.query)
		if err != nil {
			return err
		}
		for _, r := range rows {
			out, changed, err := rep.resealJSON(sl, r.json, func(field string) Binding { return t.bind(r, field) })
			if err != nil {
				return err
			}
			if !changed {
				continue
			}
			if _, err := tx.ExecContext(ctx, t.update, out, r.a, r.b); err != nil {
				return fmt.Errorf("failed to store re-sealed values: %w", err)
			}
		}
	}
	return nil
}

func sealedRows(ctx context.Context, tx *sql.Tx, query string) ([]sealedRow, error) {
	rs, err := tx.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("failed to read sealed values: %w", err)
	}
	defer rs.Close()
	var out []sealedRow
	for rs.Next() {
		var r sealedRow
		if err := rs.Scan(&r.a, &r.b, &r.json); err != nil {
			return nil, fmt.Errorf("failed to read sealed values: %w", err)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// resealJSON re-seals the first format's string values of a JSON object,
// each bound by bind(its key). Values the key does not open are kept and
// reported.
func (rep *SealerReport) resealJSON(sl *Sealer, raw string, bind func(field string) Binding) (string, bool, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &obj); err != nil {
		return "", false, fmt.Errorf("failed to decode stored settings: %w", err)
	}
	changed := false
	for field, v := range obj {
		var str string
		if json.Unmarshal(v, &str) != nil || !strings.HasPrefix(str, sealedV1Prefix) {
			continue
		}
		b := bind(field)
		pt, err := sl.Open(str, b)
		if err != nil {
			rep.Kept = append(rep.Kept, b.String())
			continue
		}
		if obj[field], err = json.Marshal(sl.Seal(pt, b)); err != nil {
			return "", false, err
		}
		changed = true
		rep.Resealed++
	}
	if !changed {
		return raw, false, nil
	}
	out, err := json.Marshal(obj)
	return string(out), true, err
}
