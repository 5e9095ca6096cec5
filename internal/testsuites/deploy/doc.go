// Package deploy holds the tests of scripts/deploy, the script that applies
// the schema migrations in production with the pinned dbmate CLI. It has no
// code of its own: the tests run the script against real databases and check
// what docs/operations/DEPLOY.md promises (concurrent deploys take turns,
// with each other and with migrate; a migration that waits too long
// for a lock fails instead of stalling traffic; an index left INVALID by a
// failed concurrent build is rebuilt).
package deploy
