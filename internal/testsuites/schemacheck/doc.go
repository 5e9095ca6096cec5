// Package schemacheck runs the schema check (sql/checks/schema_check.sql) in
// the test suite, so CI fails when a migration adds a problem the Supabase
// database linter would report: a foreign key without a usable index, a
// policy calling auth.*() outside a (SELECT ...), a duplicate index, or two
// permissive policies for one table, role and action.
//
// The package has only tests. They prove that the fully migrated schema
// passes, that each rule reports the problem it is written for (and only
// that), and that the base schema production ran before the plan's fixes
// fails with exactly the problems the plan fixed.
//
// The query itself is embedded by package checks next to the SQL file: an
// embed directive cannot reach a parent directory, and a Go package beside
// the file, like sql/schema's, ties the tests to the file at compile time.
package schemacheck
