package rls_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
)

// sharedJob is a row of public.shared_job: the job_progress columns.
type sharedJob struct {
	JobID          string
	Status         string
	TotalTasks     int32
	CompletedTasks int32
	FailedTasks    int32
	SkippedTasks   int32
	RunningTasks   int32
	CreatedAt      time.Time
	StartedAt      *time.Time
	CompletedAt    *time.Time
}

const sharedJobColumns = `job_id, status::text, total_tasks, completed_tasks, failed_tasks,
	skipped_tasks, running_tasks, created_at, started_at, completed_at`

// readShared calls the reader with token as a.
func readShared(t *testing.T, pool *testDB, a actor, token string) []sharedJob {
	t.Helper()
	ctx := context.Background()
	var out []sharedJob
	err := as(ctx, pool, a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+sharedJobColumns+` FROM public.shared_job($1)`, token)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[sharedJob])
		return err
	})
	if err != nil {
		t.Fatalf("shared_job as %s: %v", a.Name, err)
	}
	return out
}

// progressOf is the job's progress row as the superuser reads it.
func progressOf(t *testing.T, pool *testDB, jobID string) sharedJob {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT `+sharedJobColumns+` FROM job_progress WHERE job_id = $1`, jobID)
	if err != nil {
		t.Fatal(err)
	}
	job, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[sharedJob])
	if err != nil {
		t.Fatalf("progress of %s: %v", jobID, err)
	}
	return job
}

// insertLink adds a share link to job with the given extra column values
// ("expires_at = ..."), as the superuser, and returns its token.
func insertLink(t *testing.T, pool *testDB, o org, columns, values string) string {
	t.Helper()
	var token string
	sql := `INSERT INTO job_share_links (job_id, created_by` + columns + `) VALUES ($1, $2` + values + `) RETURNING token`
	if err := pool.QueryRow(context.Background(), sql, o.Job, o.User).Scan(&token); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	return token
}

// TestShareLinkReadsExactlyItsJobWhileLive calls shared_job as anon, as a
// user of another organisation and as a member, with live, expired, revoked,
// unknown and malformed tokens: a live token reads exactly its job's progress
// and every other token reads nothing.
func TestShareLinkReadsExactlyItsJobWhileLive(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, pool *testDB) {
		a := seedOrg(t, pool, "a", 4)
		b := seedOrg(t, pool, "b", 6)
		// Some progress, so the row read is not all zeros.
		exec(t, pool, `UPDATE jobs SET total_tasks = 4, completed_tasks = 1, started_at = now() WHERE id = $1`, a.Job)
		exec(t, pool, `UPDATE job_tallies SET completed = 2, releases = 2 WHERE job_id = $1 AND shard = 0`, a.Job)

		unknown := make([]byte, 32)
		if _, err := rand.Read(unknown); err != nil {
			t.Fatal(err)
		}
		// A client may write its own token (job_share_links' INSERT and UPDATE
		// grants cover the column); the reader serves only the generated shape.
		handPicked := insertLink(t, pool, a, ", token", ", 'letmein'")
		upperCase := insertLink(t, pool, a, ", token", ", upper(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''))")

		jobA := []sharedJob{progressOf(t, pool, a.Job)}
		jobB := []sharedJob{progressOf(t, pool, b.Job)}
		cases := []struct {
			name  string
			token string
			want  []sharedJob
		}{
			{"live", a.Token, jobA},
			{"live until tomorrow", insertLink(t, pool, a, ", expires_at", ", now() + interval '1 day'"), jobA},
			{"another job's live token reads that job only", b.Token, jobB},
			{"expired", insertLink(t, pool, a, ", expires_at", ", now() - interval '1 second'"), nil},
			{"revoked", insertLink(t, pool, a, ", revoked_at", ", now() - interval '1 second'"), nil},
			{"revoked before its expiry", insertLink(t, pool, a, ", expires_at, revoked_at",
				", now() + interval '1 day', now() - interval '1 second'"), nil},
			{"unknown", hex.EncodeToString(unknown), nil},
			{"empty", "", nil},
			{"a live token with a character more", a.Token + "0", nil},
			{"a live token's prefix", a.Token[:32], nil},
			{"a live token in capitals", strings.ToUpper(a.Token), nil},
			{"hand-picked by a client", handPicked, nil},
			{"capitals written by a client", upperCase, nil},
			{"a pattern, not a token", "%", nil},
		}
		for _, reader := range []actor{anon(), memberOf(b), memberOf(a)} {
			for _, tc := range cases {
				if diff := cmp.Diff(tc.want, readShared(t, pool, reader, tc.token), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s, token %s (-want +got):\n%s", reader.Name, tc.name, diff)
				}
			}
		}
	})
}

// TestShareLinkReaderIsNarrow checks how shared_job is declared: security
// definer with an empty search_path, executable by anon and authenticated
// but not by PUBLIC, and returning the progress columns only (nothing that
// names the job's organisation or users).
func TestShareLinkReaderIsNarrow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, pool *testDB) {

		type declaration struct {
			SecurityDefiner bool
			Config          []string
			PublicExecute   bool
			AnonExecute     bool
			UserExecute     bool
			Columns         string
			ReturnsSet      bool
		}
		want := declaration{
			SecurityDefiner: true,
			Config:          []string{`search_path=""`},
			AnonExecute:     true,
			UserExecute:     true,
			Columns: "job_id text, status job_status, total_tasks integer, completed_tasks integer, " +
				"failed_tasks integer, skipped_tasks integer, running_tasks integer, " +
				"created_at timestamp with time zone, started_at timestamp with time zone, " +
				"completed_at timestamp with time zone",
			ReturnsSet: true,
		}
		var got declaration
		err := pool.QueryRow(ctx, `
		SELECT p.prosecdef,
		       p.proconfig,
		       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
		               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
		       has_function_privilege('anon', p.oid, 'EXECUTE'),
		       has_function_privilege('authenticated', p.oid, 'EXECUTE'),
		       (SELECT string_agg(format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
		        FROM pg_attribute a
		        WHERE a.attrelid = (SELECT typrelid FROM pg_type WHERE oid = p.prorettype)
		          AND a.attnum > 0 AND NOT a.attisdropped),
		       p.proretset
		FROM pg_proc p
		WHERE p.oid = 'public.shared_job(text)'::regprocedure`).Scan(
			&got.SecurityDefiner, &got.Config, &got.PublicExecute, &got.AnonExecute, &got.UserExecute, &got.Columns,
			&got.ReturnsSet)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("shared_job's declaration (-want +got):\n%s", diff)
		}
	})
}

// tokenShape is what the column default generates: two version-4 UUIDs
// without their hyphens.
var tokenShape = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Chi-square critical values at p = 1e-6, the probability that a uniform
// generator exceeds them (computed from the chi-square upper tail). A
// correct generator fails each check about once in a million runs; a broken
// one (a stuck or biased digit, a narrower alphabet) lands far above them.
const (
	chiSquare15DF = 56.49 // 16 hex digits
	chiSquare3DF  = 30.66 // 4 variant digits
)

// TestShareLinkTokensAreUnguessable generates 1,000 tokens with the column
// default and checks their shape, that they are all distinct, and that
// their random digits are uniformly distributed.
//
// Each token is two version-4 UUIDs. In each, one hex digit is the version
// (always 4) and one the variant (8, 9, a or b: two random bits), so a token
// has 60 fully random digits and two half-random ones, 244 random bits.
func TestShareLinkTokensAreUnguessable(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, pool *testDB) {
		a := seedOrg(t, pool, "a", 1)
		const n = 1000
		tokens := collect[string](t, pool, `
		INSERT INTO job_share_links (job_id, created_by)
		SELECT $1, $2 FROM generate_series(1, $3::integer)
		RETURNING token`, a.Job, a.User, n)

		seen := map[string]bool{a.Token: true}
		var digits, variants [16]int
		for _, tok := range tokens {
			if !tokenShape.MatchString(tok) {
				t.Fatalf("token %q is not 64 lowercase hex digits", tok)
			}
			if seen[tok] {
				t.Fatalf("token %s generated twice", tok)
			}
			seen[tok] = true
			for i := 0; i < len(tok); i++ {
				d := hexValue(tok[i])
				switch i % 32 {
				case 12: // the UUID version
					if d != 4 {
						t.Fatalf("token %s: digit %d is %x, want the UUID version 4", tok, i, d)
					}
				case 16: // the UUID variant: 10xx
					if d < 8 || d > 11 {
						t.Fatalf("token %s: digit %d is %x, want the UUID variant 8..b", tok, i, d)
					}
					variants[d]++
				default:
					digits[d]++
				}
			}
		}
		if got := chiSquare(digits[:]); got > chiSquare15DF {
			t.Errorf("random digits: chi-square %.1f over 15 degrees of freedom > %.2f (p < 1e-6); counts %v",
				got, chiSquare15DF, digits)
		}
		if got := chiSquare(variants[8:12]); got > chiSquare3DF {
			t.Errorf("variant digits: chi-square %.1f over 3 degrees of freedom > %.2f (p < 1e-6); counts %v",
				got, chiSquare3DF, variants[8:12])
		}
	})
}

func hexValue(c byte) int {
	if c >= 'a' {
		return int(c-'a') + 10
	}
	return int(c - '0')
}

// chiSquare is Pearson's statistic of counts against a uniform distribution.
func chiSquare(counts []int) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	expected := float64(total) / float64(len(counts))
	var sum float64
	for _, c := range counts {
		d := float64(c) - expected
		sum += d * d / expected
	}
	return sum
}
