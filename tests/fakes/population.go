package fakes

// A computed population: a million users the fake serves without registering
// them one by one.

import (
	"fmt"
	"strconv"
	"strings"
)

const (
	// PopulationPassword is every population user's password.
	PopulationPassword = "population-password"
	// populationLocalpart prefixes the population's localparts, followed by
	// the index zero-padded to populationDigits, so that names sort as indexes.
	populationLocalpart = "load"
	populationDigits    = 7
	// populationTokenPrefix prefixes the population's access tokens.
	populationTokenPrefix = "load_"
	// populationDevice prefixes the population's device IDs.
	populationDevice = "LOAD"
	// PopulationDomain is the domain of the population's e-mail addresses.
	PopulationDomain = "load.test"
	// populationEpoch is when the population's 3PIDs were added (Unix ms);
	// user i's at populationEpoch + i.
	populationEpoch = 1_600_000_000_000
)

// Population is a set of users computed from their index, for load and scale
// runs: user i (0 ≤ i < Users) is @load<i, 7 digits>:<server>, logged in with
// the access token "load_<i>", password PopulationPassword, and holds
// 1 + i%3 e-mail addresses. With ConflictEvery n > 0, every user i with
// i%n == n-1 (i > 0) also holds user i-1's first address spelled in upper
// case: one canonical address held by two accounts.
type Population struct {
	Users         int
	ConflictEvery int
}

// Localpart is user i's localpart.
func (p Population) Localpart(i int) string {
	return fmt.Sprintf("%s%0*d", populationLocalpart, populationDigits, i)
}

// Token is user i's access token.
func (p Population) Token(i int) string { return populationTokenPrefix + strconv.Itoa(i) }

// ThreepidCount is how many addresses of its own user i holds (1 to 3).
func (p Population) ThreepidCount(i int) int { return 1 + i%3 }

// Address is user i's k-th own address (0 ≤ k < ThreepidCount(i)), canonical.
func (p Population) Address(i, k int) string {
	return fmt.Sprintf("user%d.%d@%s", i, k, PopulationDomain)
}

// Conflicting reports whether user i also holds user i-1's first address.
func (p Population) Conflicting(i int) bool {
	return p.ConflictEvery > 0 && i > 0 && i%p.ConflictEvery == p.ConflictEvery-1
}

// AddedAt is when user i's 3PIDs were added and validated (Unix ms).
func (p Population) AddedAt(i int) int64 { return populationEpoch + int64(i) }

// Threepids is user i's 3PIDs as the homeserver holds them.
func (p Population) Threepids(i int) []HomeserverThreepid {
	n := p.ThreepidCount(i)
	tps := make([]HomeserverThreepid, 0, n+1)
	at := p.AddedAt(i)
	for k := range n {
		tps = append(tps, HomeserverThreepid{Medium: "email", Address: p.Address(i, k), ValidatedAt: at, AddedAt: at})
	}
	if p.Conflicting(i) {
		tps = append(tps, HomeserverThreepid{Medium: "email", Address: strings.ToUpper(p.Address(i-1, 0)), ValidatedAt: at, AddedAt: at})
	}
	return tps
}

// index returns the index of the population user with localpart lp.
func (p Population) index(lp string) (int, bool) {
	digits, ok := strings.CutPrefix(lp, populationLocalpart)
	if !ok || len(digits) != populationDigits {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	return i, err == nil && i >= 0 && i < p.Users
}

// tokenIndex returns the index of the population user whose token is token.
func (p Population) tokenIndex(token string) (int, bool) {
	digits, ok := strings.CutPrefix(token, populationTokenPrefix)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	return i, err == nil && i >= 0 && i < p.Users && strconv.Itoa(i) == digits
}

// SetPopulation makes the fake serve p's users beside the registered ones,
// without storing them: a population user is stored (materialised) only
// when something authenticates as it or changes it; the admin API lists and
// shows the others as computed. Listing puts the population first, in
// index order, then the registered users by name; its total counts the
// population whatever state its users are in.
func (hs *Homeserver) SetPopulation(p Population) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.population = p
}

// populationUser computes population user i as a fresh hsUser.
func (hs *Homeserver) populationUser(i int) *hsUser {
	p := hs.population
	return &hsUser{id: hs.userID(p.Localpart(i)), password: PopulationPassword,
		createdAt: p.AddedAt(i) / 1000, threepids: p.Threepids(i)}
}

// populationIndex returns the population index of userID.
func (hs *Homeserver) populationIndex(userID string) (int, bool) {
	lp, ok := strings.CutPrefix(userID, "@")
	if !ok {
		return 0, false
	}
	lp, ok = strings.CutSuffix(lp, ":"+hs.serverName)
	if !ok {
		return 0, false
	}
	return hs.population.index(lp)
}

// user returns userID's user (nil if none), materialising a population
// user. hs.mu must be held.
func (hs *Homeserver) user(userID string) *hsUser {
	if u := hs.users[userID]; u != nil {
		return u
	}
	i, ok := hs.populationIndex(userID)
	if !ok {
		return nil
	}
	u := hs.populationUser(i)
	hs.users[userID] = u
	for _, tp := range u.threepids {
		if hs.holders[hsThreepidKey{tp.Medium, tp.Address}] == nil {
			hs.holders[hsThreepidKey{tp.Medium, tp.Address}] = u
		}
	}
	return u
}

// peekUser returns userID's user (nil if none) without materialising a
// population user: for reads. hs.mu must be held.
func (hs *Homeserver) peekUser(userID string) *hsUser {
	if u := hs.users[userID]; u != nil {
		return u
	}
	if i, ok := hs.populationIndex(userID); ok {
		return hs.populationUser(i)
	}
	return nil
}

// token returns the device of token (nil if none), materialising a
// population user's. hs.mu must be held.
func (hs *Homeserver) token(token string) *hsToken {
	if tok := hs.tokens[token]; tok != nil {
		return tok
	}
	i, ok := hs.population.tokenIndex(token)
	if !ok {
		return nil
	}
	u := hs.user(hs.userID(hs.population.Localpart(i)))
	if u.deactivated {
		return nil
	}
	tok := &hsToken{userID: u.id, deviceID: populationDevice + strconv.Itoa(i)}
	hs.tokens[token] = tok
	return tok
}
