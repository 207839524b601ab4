package threepid

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
)

// Entropy of the generated identifiers, in bytes.
const (
	sidBytes        = 16 // 128 bits
	emailTokenBytes = 32 // 256 bits
)

// smsCodeSpace is the number of distinct SMS codes (six digits).
var smsCodeSpace = big.NewInt(1_000_000)

// NewSID returns a new validation session id: 128 random bits in the
// URL-safe base64 alphabet, which [ValidSID] accepts.
func NewSID() string { return randomString(sidBytes) }

// NewEmailToken returns a new token for an e-mail validation link: 256 random
// bits, URL-safe.
func NewEmailToken() string { return randomString(emailTokenBytes) }

func randomString(n int) string {
	b := make([]byte, n)
	// crypto/rand.Read never returns an error; it aborts the program if the
	// system's random source fails.
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewSMSCode returns a new six-digit code for an SMS, uniformly distributed,
// with leading zeros kept.
func NewSMSCode() string {
	n, err := rand.Int(rand.Reader, smsCodeSpace)
	if err != nil {
		// rand.Reader never fails (see randomString), so this cannot happen.
		panic(fmt.Sprintf("threepid: crypto/rand failed: %v", err))
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// HashToken returns the hex SHA-256 of a validation token: only the hash is
// stored.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// TokenMatches reports, in constant time, whether tok hashes to hash (a value
// from [HashToken]).
func TokenMatches(hash, tok string) bool {
	return subtle.ConstantTimeCompare([]byte(HashToken(tok)), []byte(hash)) == 1
}
