package pgtest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	_ "embed" // the Supabase shape
	"encoding/hex"
	"fmt"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/peterldowns/pgtestdb"

	"github.com/blue-banded-bee/taskq/migrate"
)

// supabaseShape builds the roles, schemas and privileges of a Supabase
// project in the current database (see the file's header).
//
//go:embed supabase.sql
var supabaseShape string

// SupabaseMigrationRole is the role that migrates a Supabase-shaped
// database, as Supabase's postgres role does: no superuser. Its password is
// its name.
const SupabaseMigrationRole = "supa_postgres"

// SupabaseAuth is which of Supabase's definitions of auth.uid() and
// auth.role() a Supabase-shaped database has.
type SupabaseAuth int

const (
	// SupabaseAuthClaimSub is the definition in Supabase's init scripts: it
	// reads only request.jwt.claim.sub (and .role), the settings PostgREST
	// made before version 9.
	SupabaseAuthClaimSub SupabaseAuth = iota + 1
	// SupabaseAuthClaims is the definition Supabase's auth server installs
	// now: request.jwt.claim.sub if set, else the sub of the JSON in
	// request.jwt.claims, which PostgREST 9 and later set.
	SupabaseAuthClaims
)

func (a SupabaseAuth) String() string {
	switch a {
	case SupabaseAuthClaimSub:
		return "claim.sub"
	case SupabaseAuthClaims:
		return "claims"
	}
	return fmt.Sprintf("SupabaseAuth(%d)", int(a))
}

// functions defines auth.uid() and auth.role(), owned by
// supabase_auth_admin as on Supabase, with EXECUTE left to PUBLIC.
func (a SupabaseAuth) functions() (string, error) {
	var uid, role string
	switch a {
	case SupabaseAuthClaimSub:
		uid = `SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid`
		role = `SELECT nullif(current_setting('request.jwt.claim.role', true), '')::text`
	case SupabaseAuthClaims:
		uid = `SELECT coalesce(
			nullif(current_setting('request.jwt.claim.sub', true), ''),
			(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid`
		role = `SELECT coalesce(
			nullif(current_setting('request.jwt.claim.role', true), ''),
			(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text`
	default:
		return "", fmt.Errorf("pgtest: unknown %v", a)
	}
	return fmt.Sprintf(`
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $fn$ %s $fn$;
		CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $fn$ %s $fn$;
		ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin;
		ALTER FUNCTION auth.role() OWNER TO supabase_auth_admin;`, uid, role), nil
}

// ShapeSupabase makes the empty database at url (a superuser URL) look like a
// Supabase project's, with auth's definitions of auth.uid() and auth.role(),
// and returns the URL of the same database as SupabaseMigrationRole.
func ShapeSupabase(ctx context.Context, dbURL string, auth SupabaseAuth) (string, error) {
	functions, err := auth.functions()
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer conn.Close(context.Background())
	// Without arguments pgx sends each text whole, as a simple query.
	for _, stmts := range []string{supabaseShape, functions} {
		if _, err := conn.Exec(ctx, stmts); err != nil {
			return "", fmt.Errorf("pgtest: shape the database like Supabase's: %w", err)
		}
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	u.User = url.UserPassword(SupabaseMigrationRole, SupabaseMigrationRole)
	return u.String(), nil
}

// SupabaseEmptyURL returns the URLs of a new Supabase-shaped database with no
// migrations applied: as the superuser, and as SupabaseMigrationRole.
func SupabaseEmptyURL(t testing.TB, auth SupabaseAuth) (admin, migrator string) {
	t.Helper()
	admin = EmptyURL(t)
	migrator, err := ShapeSupabase(context.Background(), admin, auth)
	if err != nil {
		t.Fatal(err)
	}
	return admin, migrator
}

// SupabaseURL returns the URL (as the superuser) of a new Supabase-shaped
// database that SupabaseMigrationRole migrated up to target.
func SupabaseURL(t testing.TB, target string, auth SupabaseAuth) string {
	t.Helper()
	return pgtestdb.Custom(t, config(t), supabaseMigrator{target: target, auth: auth}).URL()
}

// supabaseMigrator shapes a template database like Supabase's, then
// migrates it as SupabaseMigrationRole.
type supabaseMigrator struct {
	target string
	auth   SupabaseAuth
}

func (m supabaseMigrator) Hash() (string, error) {
	migrations, err := migrate.Hash(m.target)
	if err != nil {
		return "", err
	}
	functions, err := m.auth.functions()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", migrations, supabaseShape, functions)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (m supabaseMigrator) Migrate(ctx context.Context, _ *sql.DB, conf pgtestdb.Config) error {
	migrator, err := ShapeSupabase(ctx, conf.URL(), m.auth)
	if err != nil {
		return err
	}
	return migrate.Runner{URL: migrator, Target: m.target}.Up(ctx)
}
