// Package testsuites gathers, one package each below it, the suites that
// hold only tests: rls (row-level security and share links), faults
// (process-level faults), pooler (the application through PgBouncer),
// deploy (scripts/deploy) and schemacheck (sql/checks). None has code of its
// own; the tests of a package with code sit beside it.
package testsuites
