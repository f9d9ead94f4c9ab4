package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// sealedPrefix marks a value encrypted by a Sealer.
const sealedPrefix = "sealed:v1:"

// ErrNoKey is returned when opening a sealed value without a key.
var ErrNoKey = errors.New("value is encrypted but PASSERELLE_STORE_KEY is not set")

// Sealer encrypts stored foreign credentials with AES-256-GCM under a key
// derived from PASSERELLE_STORE_KEY. The zero Sealer (no key) stores values
// in clear.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for key; an empty key gives a clear-text Sealer.
func NewSealer(key string) *Sealer {
	if key == "" {
		return &Sealer{}
	}
	k := sha256.Sum256([]byte("passerelle store key\x00" + key))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // 32-byte keys are always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &Sealer{aead: aead}
}

// Encrypting reports whether values are sealed.
func (s *Sealer) Encrypting() bool { return s != nil && s.aead != nil }

// Seal encrypts v (or returns it unchanged without a key).
func (s *Sealer) Seal(v string) string {
	if !s.Encrypting() || v == "" {
		return v
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	ct := s.aead.Seal(nonce, nonce, []byte(v), nil)
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(ct)
}

// Open decrypts a value written by Seal; clear values pass through.
func (s *Sealer) Open(v string) (string, error) {
	rest, ok := strings.CutPrefix(v, sealedPrefix)
	if !ok {
		return v, nil
	}
	if !s.Encrypting() {
		return "", ErrNoKey
	}
	ct, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil || len(ct) < s.aead.NonceSize() {
		return "", errors.New("corrupt encrypted value")
	}
	pt, err := s.aead.Open(nil, ct[:s.aead.NonceSize()], ct[s.aead.NonceSize():], nil)
	if err != nil {
		return "", errors.New("cannot decrypt stored value: wrong PASSERELLE_STORE_KEY?")
	}
	return string(pt), nil
}
