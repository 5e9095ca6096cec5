// Package checks embeds the read-only SQL checks in this directory, so the Go
// tests run exactly the file a person runs with psql.
package checks

import _ "embed" // for go:embed

// SchemaCheck is schema_check.sql: one query over pg_catalog that returns a
// row (check, object, detail) per problem in the schema; no rows means the
// schema passes. Its header comment explains each rule.
//
//go:embed schema_check.sql
var SchemaCheck string
