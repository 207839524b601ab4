package sqlstore

import "slices"

// MigrateOnlyTo makes Open apply the migrations up to version only, until
// restore is called: tests of a migration prepare the data it migrates.
func MigrateOnlyTo(version int64) (restore func()) {
	all := migrations
	i := slices.IndexFunc(all, func(m migration) bool { return m.version > version })
	migrations = all[:i]
	return func() { migrations = all }
}
