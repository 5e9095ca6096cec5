// Package rls holds the tests of the row-level-security policies and share links in sql/schema.
package rls
