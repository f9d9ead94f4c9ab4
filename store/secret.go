package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Sealed values are "sealed:v2:" + base64(nonce | AES-256-GCM ciphertext),
// with the value's Binding as the additional data. Values of the first
// format, "sealed:v1:", carry no additional data and were sealed under
// SHA-256 of the key; they are still opened, and OpenSealer re-seals them.
const (
	sealedPrefix   = "sealed:v2:"
	sealedV1Prefix = "sealed:v1:"
	sealedAny      = "sealed:"
)

// ErrNoKey is returned when opening a sealed value without a key.
var ErrNoKey = errors.New("value is encrypted but PASSERELLE_STORE_KEY is not set")

// ErrWrongKey is returned by OpenSealer when PASSERELLE_STORE_KEY does not
// open the database's sealed values (or is missing while some exist).
var ErrWrongKey = errors.New("PASSERELLE_STORE_KEY does not open the secrets stored in the database")

// ErrNotBound is returned when a sealed value does not open with the
// binding it is read under: it was sealed for another user, bridge or field
// (copied there), or altered.
var ErrNotBound = errors.New("the value was sealed for another user or field, or altered")

// Binding says where a sealed value belongs: a value opens only under the
// binding it was sealed with.
type Binding struct {
	Domain string // component domain of the bridge
	JID    string // bare JID of the user
	Field  string // the registration form field, or NetworkField's name
}

// NetworkField names a secret of a user's IRC network settings (the
// irc_networks table) for its Binding.
func NetworkField(server, name string) string { return "irc_networks/" + server + "/" + name }

// aad encodes b unambiguously (each part prefixed with its length).
func (b Binding) aad() []byte {
	out := []byte("passerelle sealed v2")
	for _, p := range []string{b.Domain, b.JID, b.Field} {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

func (b Binding) String() string { return fmt.Sprintf("%s of %s on %s", b.Field, b.JID, b.Domain) }

// Sealer encrypts stored foreign credentials with AES-256-GCM under a key
// derived from PASSERELLE_STORE_KEY (see OpenSealer). The zero Sealer (no
// key) stores values in clear.
type Sealer struct {
	aead cipher.AEAD // the current format; nil without a key
	v1   cipher.AEAD // the first format's key, for values not yet re-sealed
}

// Encrypting reports whether values are sealed.
func (s *Sealer) Encrypting() bool { return s != nil && s.aead != nil }

// Seal encrypts v for b (or returns it unchanged without a key).
func (s *Sealer) Seal(v string, b Binding) string {
	if !s.Encrypting() || v == "" {
		return v
	}
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(seal(s.aead, v, b.aad()))
}

func seal(aead cipher.AEAD, v string, aad []byte) []byte {
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce) // never fails (it crashes the program instead)
	return aead.Seal(nonce, nonce, []byte(v), aad)
}

// Open decrypts a value written by Seal for b (or by the first format);
// clear values pass through.
func (s *Sealer) Open(v string, b Binding) (string, error) {
	if !strings.HasPrefix(v, sealedAny) {
		return v, nil
	}
	if !s.Encrypting() {
		return "", ErrNoKey
	}
	if rest, ok := strings.CutPrefix(v, sealedV1Prefix); ok {
		pt, err := openSealed(s.v1, rest, nil)
		if err != nil {
			return "", fmt.Errorf("failed to open the stored %s (first format): %w", b, err)
		}
		return pt, nil
	}
	rest, ok := strings.CutPrefix(v, sealedPrefix)
	if !ok {
		format, _, _ := strings.Cut(strings.TrimPrefix(v, sealedAny), ":")
		return "", fmt.Errorf("failed to open the stored %s: unknown format sealed:%.10s (written by a newer version?)", b, format)
	}
	pt, err := openSealed(s.aead, rest, b.aad())
	if err != nil {
		return "", fmt.Errorf("failed to open the stored %s: %w", b, err)
	}
	return pt, nil
}

var errCorrupt = errors.New("corrupt encrypted value")

func openSealed(aead cipher.AEAD, b64 string, aad []byte) (string, error) {
	ct, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(ct) < aead.NonceSize() {
		return "", errCorrupt
	}
	pt, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], aad)
	if err != nil {
		if aad == nil {
			return "", errors.New("cannot decrypt the value: it was sealed under another PASSERELLE_STORE_KEY")
		}
		return "", ErrNotBound
	}
	return string(pt), nil
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // 32-byte keys are always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// v1AEAD is the first format's cipher: SHA-256 of the key, no salt.
func v1AEAD(key string) cipher.AEAD {
	k := sha256.Sum256([]byte("passerelle store key\x00" + key))
	return newGCM(k[:])
}

// Key derivation. A key of 64 hex digits, or base64 of 32 bytes or more
// (`openssl rand -hex 32`, `openssl rand -base64 32`), is random: HKDF-SHA256
// derives the sealing key from it. Anything else is a passphrase, stretched
// with Argon2id. Both use a random salt kept in the database, and the
// derivation and its parameters are recorded there, so that they can change
// for new databases without stranding old ones.
const (
	kdfHKDF     = "hkdf-sha256"
	kdfArgon2id = "argon2id"
	hkdfInfo    = "passerelle store key v2"
	saltSize    = 16
)

// argon2Params are Argon2id's costs: OWASP's 19 MiB, 2 passes, 1 lane,
// about 40 ms on one core, paid once at start.
type argon2Params struct {
	Time, Memory uint32
	Threads      uint8
}

var defaultArgon2 = argon2Params{Time: 2, Memory: 19 * 1024, Threads: 1}

func (p argon2Params) String() string {
	return fmt.Sprintf("%s t=%d m=%d p=%d", kdfArgon2id, p.Time, p.Memory, p.Threads)
}

// RandomKey reports whether key is taken as random key material (HKDF)
// rather than a passphrase (Argon2id), and returns its bytes.
func RandomKey(key string) ([]byte, bool) {
	if len(key) == 64 {
		if b, err := hex.DecodeString(key); err == nil {
			return b, true
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(key); err == nil && len(b) >= 32 {
			return b, true
		}
	}
	return nil, false
}

// kdfFor names the derivation a new database uses for key.
func kdfFor(key string) string {
	if _, ok := RandomKey(key); ok {
		return kdfHKDF
	}
	return defaultArgon2.String()
}

// deriveKey derives the 32-byte sealing key from key with kdf (as recorded)
// and salt.
func deriveKey(key, kdf string, salt []byte) ([]byte, error) {
	raw, random := RandomKey(key)
	if kdf == kdfHKDF {
		if !random {
			return nil, fmt.Errorf("%w: it is a passphrase, but the database's secrets are sealed under a random key (64 hex digits or base64 of 32 bytes)", ErrWrongKey)
		}
		return hkdf.Key(sha256.New, raw, salt, hkdfInfo, 32)
	}
	var p argon2Params
	if _, err := fmt.Sscanf(kdf, kdfArgon2id+" t=%d m=%d p=%d", &p.Time, &p.Memory, &p.Threads); err != nil || p.Time == 0 || p.Memory == 0 || p.Threads == 0 {
		return nil, fmt.Errorf("unknown key derivation %q recorded in the database (written by a newer version?)", kdf)
	}
	if random {
		return nil, fmt.Errorf("%w: it is a random key (64 hex digits or base64 of 32 bytes), but the database's secrets are sealed under a passphrase", ErrWrongKey)
	}
	return argon2.IDKey([]byte(key), salt, p.Time, p.Memory, p.Threads, 32), nil
}

// keyCheck is sealed under the key in the database, so that a wrong key is
// seen at start rather than when a user's password is first needed.
const keyCheck = "passerelle store key check"

var keyCheckBinding = Binding{Field: "key check"}
