// Package schema embeds the dbmate migrations in this directory, the single
// source of the database schema: dbmate applies them, sqlc reads them to
// generate gen/, and the binaries carry them for "taskq migrate".
package schema

import "embed"

// FS holds every migration file, named <version>_<name>.sql.
//
//go:embed *.sql
var FS embed.FS
