// Package signingkey loads, generates and writes the homeserver's ed25519
// signing key in the two formats operators already have: Synapse's one-line
// "ed25519 <id> <base64 seed>" file and Dendrite's "MATRIX PRIVATE KEY" PEM.
package signingkey

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"os"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

const (
	// algorithm is the only signing algorithm Matrix uses.
	algorithm = "ed25519"
	// pemType is the PEM block type Dendrite writes its key under.
	pemType = "MATRIX PRIVATE KEY"
	// pemKeyIDHeader is the PEM header that carries the key ID.
	pemKeyIDHeader = "Key-ID"
	// maxFileSize bounds what Load reads: a key file is well under 1 KiB.
	maxFileSize = 64 << 10
	// randomIDLen is the length of the random part of a generated key ID
	// (Synapse generates "a_" plus four letters).
	randomIDLen = 4
)

// Key is an ed25519 signing key with its key ID (e.g. "ed25519:a_Abcd").
type Key struct {
	ID      gomatrixserverlib.KeyID
	Private ed25519.PrivateKey
}

// Load reads a signing key file. It accepts Synapse's format (the first line
// "ed25519 <id> <base64 seed>", padded or unpadded base64) and Dendrite's PEM
// (block type "MATRIX PRIVATE KEY" with a "Key-ID: ed25519:<id>" header and the
// 32-byte seed as its bytes).
func Load(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("load signing key %s: file larger than %d bytes", path, maxFileSize)
	}
	k, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	return k, nil
}

// parse detects the format of a key file and decodes it.
func parse(data []byte) (*Key, error) {
	if bytes.Contains(data, []byte("-----BEGIN ")) {
		return parsePEM(data)
	}
	return parseSynapse(data)
}

// parsePEM decodes the first "MATRIX PRIVATE KEY" block, skipping any other
// blocks as Dendrite does.
func parsePEM(data []byte) (*Key, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("no %q PEM block", pemType)
		}
		if block.Type != pemType {
			continue
		}
		id, ok := strings.CutPrefix(block.Headers[pemKeyIDHeader], algorithm+":")
		if !ok {
			return nil, fmt.Errorf("PEM header %s must be %q, got %q", pemKeyIDHeader, algorithm+":<id>", block.Headers[pemKeyIDHeader])
		}
		return fromSeed(id, block.Bytes)
	}
}

// parseSynapse decodes the first non-empty line of a Synapse key file.
func parseSynapse(data []byte) (*Key, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), maxFileSize)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("want %q, got %d fields", "ed25519 <id> <base64 seed>", len(fields))
		}
		if fields[0] != algorithm {
			return nil, fmt.Errorf("unsupported key algorithm %q (want %s)", fields[0], algorithm)
		}
		seed, err := decodeBase64(fields[2])
		if err != nil {
			return nil, fmt.Errorf("key seed: %w", err)
		}
		return fromSeed(fields[1], seed)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	return nil, errors.New("empty key file")
}

// decodeBase64 decodes standard base64 with or without padding, as Synapse's
// signedjson does.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// fromSeed builds a Key from a key ID (without the algorithm prefix) and a seed.
func fromSeed(id string, seed []byte) (*Key, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("key seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return &Key{
		ID:      gomatrixserverlib.KeyID(algorithm + ":" + id),
		Private: ed25519.NewKeyFromSeed(seed),
	}, nil
}

// checkID enforces the spec's key identifier grammar, [a-zA-Z0-9_]+. It also
// keeps the ID safe inside an X-Matrix header and a key file line.
func checkID(id string) error {
	if id == "" {
		return errors.New("empty key ID")
	}
	for _, c := range []byte(id) {
		if !isIDChar(c) {
			return fmt.Errorf("key ID %q: only letters, digits and _ are allowed", id)
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// Generate makes a new random key. id is the key identifier without the
// "ed25519:" prefix; an empty id gets a random one in Synapse's style ("a_" and
// four letters).
func Generate(id string) (*Key, error) {
	if id == "" {
		id = "a_" + randomLetters(randomIDLen)
	}
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed) // crypto/rand.Read never fails.
	k, err := fromSeed(id, seed)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return k, nil
}

// randomLetters returns n random ASCII letters. The key ID is public, so it
// needs no cryptographic randomness.
func randomLetters(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[mathrand.N(len(letters))]
	}
	return string(b)
}

// version is the key ID without its "ed25519:" prefix.
func (k *Key) version() string {
	return strings.TrimPrefix(string(k.ID), algorithm+":")
}

// WriteSynapse writes the key in Synapse's format:
// "ed25519 <id> <unpadded base64 seed>\n".
func (k *Key) WriteSynapse(w io.Writer) error {
	seed := base64.RawStdEncoding.EncodeToString(k.Private.Seed())
	if _, err := fmt.Fprintf(w, "%s %s %s\n", algorithm, k.version(), seed); err != nil {
		return fmt.Errorf("write synapse signing key: %w", err)
	}
	return nil
}

// WriteDendrite writes the key as Dendrite's PEM: block type
// "MATRIX PRIVATE KEY", header Key-ID, bytes the 32-byte seed.
func (k *Key) WriteDendrite(w io.Writer) error {
	block := &pem.Block{
		Type:    pemType,
		Headers: map[string]string{pemKeyIDHeader: string(k.ID)},
		Bytes:   k.Private.Seed(),
	}
	if err := pem.Encode(w, block); err != nil {
		return fmt.Errorf("write dendrite signing key: %w", err)
	}
	return nil
}

// PublicKey is the public half of the key.
func (k *Key) PublicKey() ed25519.PublicKey {
	return k.Private.Public().(ed25519.PublicKey)
}

// PublicBase64 is the public key in unpadded standard base64, as Matrix
// publishes verify keys.
func (k *Key) PublicBase64() string {
	return base64.RawStdEncoding.EncodeToString(k.PublicKey())
}
