package signingkey

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The fixtures in testdata were written by Generate + WriteSynapse /
// WriteDendrite; synapse-padded.key is hand-written (padded base64, a second
// line Synapse ignores).
func TestLoadFixtures(t *testing.T) {
	tests := []struct {
		file, wantID, wantPublic string
	}{
		{"synapse.key", "ed25519:a_Syn1", "iSrbpkbPOjOg4WvBDMZERvbYzHoazr8Qyzuj32wkC7k"},
		{"dendrite.pem", "ed25519:dend_2", "MA2NxnVSA940OsS/22/4n/AhHuyhs8ZGDPLooouYgns"},
		{"synapse-padded.key", "ed25519:padded", "itS+I4QbU169BRq+Vd0KGFfcrh1z2u6gY7htnslkPoM"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			k, err := Load(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if string(k.ID) != tt.wantID {
				t.Errorf("ID = %q, want %q", k.ID, tt.wantID)
			}
			if got := k.PublicBase64(); got != tt.wantPublic {
				t.Errorf("PublicBase64 = %q, want %q", got, tt.wantPublic)
			}
			msg := []byte("threepidd")
			if !ed25519.Verify(k.PublicKey(), msg, ed25519.Sign(k.Private, msg)) {
				t.Error("signature by Private does not verify with PublicKey")
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	const seed = "S5BpJiZNzVaxwKNrPc6678EqIqpHDpz+HN88ICdAXrw"
	tests := []struct {
		name, content, wantErr string
	}{
		{"empty", "\n\n", "empty key file"},
		{"other algorithm", "rsa a_1 " + seed + "\n", "unsupported key algorithm"},
		{"two fields", "ed25519 " + seed + "\n", "got 2 fields"},
		{"four fields", "ed25519 a_1 " + seed + " x\n", "got 4 fields"},
		{"short seed", "ed25519 a_1 AAAA\n", "3 bytes, want 32"},
		{"not base64", "ed25519 a_1 !!!!\n", "key seed"},
		{"bad id", "ed25519 a-1 " + seed + "\n", `key ID "a-1"`},
		{"pem without key id", "-----BEGIN MATRIX PRIVATE KEY-----\n\nS5BpJiZNzVaxwKNrPc6678EqIqpHDpz+HN88ICdAXrw=\n-----END MATRIX PRIVATE KEY-----\n", "Key-ID"},
		{"pem of another type", "-----BEGIN PRIVATE KEY-----\n\nAAAA\n-----END PRIVATE KEY-----\n", `no "MATRIX PRIVATE KEY" PEM block`},
		{"pem short seed", "-----BEGIN MATRIX PRIVATE KEY-----\nKey-ID: ed25519:x\n\nAAAA\n-----END MATRIX PRIVATE KEY-----\n", "3 bytes, want 32"},
		{"too large", strings.Repeat("#", maxFileSize+1), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestLoadSkipsOtherPEMBlocks(t *testing.T) {
	k, err := Generate("multi")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString("-----BEGIN CERTIFICATE-----\n\nAAAA\n-----END CERTIFICATE-----\n")
	if err := k.WriteDendrite(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "matrix_key.pem")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Errorf("loaded %s, want %s with the same private key", got.ID, k.ID)
	}
}

func TestRoundTrip(t *testing.T) {
	writers := []struct {
		name  string
		write func(*Key, *bytes.Buffer) error
	}{
		{"synapse", func(k *Key, b *bytes.Buffer) error { return k.WriteSynapse(b) }},
		{"dendrite", func(k *Key, b *bytes.Buffer) error { return k.WriteDendrite(b) }},
	}
	for _, id := range []string{"", "0", "a_Abcd"} {
		for _, w := range writers {
			t.Run(w.name+"/"+id, func(t *testing.T) {
				k, err := Generate(id)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				if err := w.write(k, &buf); err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "key")
				if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
					t.Fatal(err)
				}
				got, err := Load(path)
				if err != nil {
					t.Fatalf("Load(%q): %v", buf.String(), err)
				}
				if got.ID != k.ID || !got.Private.Equal(k.Private) || got.PublicBase64() != k.PublicBase64() {
					t.Errorf("round trip changed the key: %s %s, want %s %s", got.ID, got.PublicBase64(), k.ID, k.PublicBase64())
				}
			})
		}
	}
}

func TestGenerate(t *testing.T) {
	k1, err := Generate("")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ed25519:a_[A-Za-z]{4}$`).MatchString(string(k1.ID)) {
		t.Errorf("random ID %q is not Synapse-style", k1.ID)
	}
	k2, err := Generate("0")
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID != "ed25519:0" {
		t.Errorf("ID = %q, want ed25519:0", k2.ID)
	}
	if k1.Private.Equal(k2.Private) {
		t.Error("two generated keys are equal")
	}
	var line bytes.Buffer
	if err := k2.WriteSynapse(&line); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ed25519 0 [A-Za-z0-9+/]{43}\n$`).Match(line.Bytes()) {
		t.Errorf("Synapse line %q is not \"ed25519 <id> <unpadded base64>\\n\"", line.String())
	}
	for _, bad := range []string{"ed25519:x", "a b", "ä", `q"`} {
		if _, err := Generate(bad); err == nil {
			t.Errorf("Generate(%q) succeeded", bad)
		}
	}
}
