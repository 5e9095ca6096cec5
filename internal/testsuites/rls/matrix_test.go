package rls_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// outcome is what became of one attempt on another organisation's rows.
type outcome int

const (
	// refused: the statement failed with SQLSTATE 42501, for a missing
	// privilege or a row a policy rejects.
	refused outcome = iota + 1
	// noRows: the statement ran and saw or changed no row.
	noRows
	// someRows: the statement saw or changed rows. Never wanted.
	someRows
	// otherError: any other failure (unique or foreign-key violation,
	// syntax...). Never wanted: it would hide whether the policy held.
	otherError
)

func (o outcome) String() string {
	switch o {
	case refused:
		return "refused"
	case noRows:
		return "no rows"
	case someRows:
		return "SOME ROWS"
	case otherError:
		return "other error"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// attack is one statement aimed at the victim organisation's rows, run by a
// user of the other organisation ("own" names that user's rows) and by anon.
type attack struct {
	Table string
	Name  string
	// SQL holds placeholders {own.x} and {victim.x} (see bind).
	SQL string
	// Authenticated is the wanted outcome for a user of the other
	// organisation, Anon for anon.
	Authenticated outcome
	Anon          outcome
}

// attacks is the matrix: every table and the progress view, SELECT, INSERT,
// UPDATE, DELETE and TRUNCATE (which row-level security does not filter)
// on the victim's rows, plus moving one's own rows into the victim's
// organisation. Where the statement may run but must find nothing the want
// is noRows; where a privilege or a policy's check must stop it, refused.
// anon holds no table privilege at all, so every anon attempt is refused.
var attacks = []attack{
	{"organisations", "select", `SELECT id FROM organisations WHERE id = {victim.org}`, noRows, refused},
	{"organisations", "insert with the victim's id, else update it",
		`INSERT INTO organisations (id, name) VALUES ({victim.org}, 'taken') ON CONFLICT (id) DO UPDATE SET name = 'taken'`,
		refused, refused},
	{"organisations", "update", `UPDATE organisations SET name = 'taken' WHERE id = {victim.org}`, noRows, refused},
	{"organisations", "delete", `DELETE FROM organisations WHERE id = {victim.org}`, refused, refused},
	{"organisations", "truncate", `TRUNCATE organisations CASCADE`, refused, refused},

	{"users", "select", `SELECT id FROM users WHERE organisation_id = {victim.org}`, noRows, refused},
	{"users", "insert a member into the victim's organisation",
		`INSERT INTO users (id, email, organisation_id) VALUES (gen_random_uuid(), 'intruder@example.com', {victim.org})`,
		refused, refused},
	{"users", "update", `UPDATE users SET full_name = 'taken' WHERE id = {victim.user}`, noRows, refused},
	{"users", "delete", `DELETE FROM users WHERE id = {victim.user}`, refused, refused},
	{"users", "truncate", `TRUNCATE users CASCADE`, refused, refused},
	{"users", "move one's own row into the victim's organisation",
		`UPDATE users SET organisation_id = {victim.org} WHERE id = {own.user}`, refused, refused},

	{"domains", "select", `SELECT id FROM domains WHERE id = {victim.domain}`, noRows, refused},
	{"domains", "insert", `INSERT INTO domains (name) VALUES ('intruder.example')`, refused, refused},
	{"domains", "update", `UPDATE domains SET name = 'taken.example' WHERE id = {victim.domain}`, refused, refused},
	{"domains", "delete", `DELETE FROM domains WHERE id = {victim.domain}`, refused, refused},
	{"domains", "truncate", `TRUNCATE domains CASCADE`, refused, refused},

	{"pages", "select", `SELECT id FROM pages WHERE domain_id = {victim.domain}`, noRows, refused},
	{"pages", "insert into the victim's domain",
		`INSERT INTO pages (domain_id, path) VALUES ({victim.domain}, '/intruder')`, refused, refused},
	{"pages", "update", `UPDATE pages SET path = path || '-taken' WHERE domain_id = {victim.domain}`, refused, refused},
	{"pages", "delete", `DELETE FROM pages WHERE domain_id = {victim.domain}`, refused, refused},
	{"pages", "truncate", `TRUNCATE pages CASCADE`, refused, refused},

	{"jobs", "select", `SELECT id FROM jobs WHERE organisation_id = {victim.org}`, noRows, refused},
	{"jobs", "insert into the victim's organisation",
		`INSERT INTO jobs (id, domain_id, user_id, organisation_id) VALUES ('intruder', {victim.domain}, {victim.user}, {victim.org})`,
		refused, refused},
	{"jobs", "insert with the victim's job id, else update it",
		`INSERT INTO jobs (id, domain_id, organisation_id) VALUES ({victim.job}, {own.domain}, {own.org})
		 ON CONFLICT (id) DO UPDATE SET status = 'cancelled'`,
		refused, refused},
	{"jobs", "update", `UPDATE jobs SET status = 'cancelled', concurrency = 1 WHERE id = {victim.job}`, refused, refused},
	{"jobs", "delete", `DELETE FROM jobs WHERE id = {victim.job}`, refused, refused},
	{"jobs", "truncate", `TRUNCATE jobs CASCADE`, refused, refused},
	// anon sees no job of its own to move: no rows.
	{"jobs", "move one's own job into the victim's organisation",
		`UPDATE jobs SET organisation_id = {victim.org} WHERE id = {own.job}`, refused, refused},

	{"tasks", "select", `SELECT id FROM tasks WHERE job_id = {victim.job}`, noRows, refused},
	{"tasks", "insert into the victim's job",
		`INSERT INTO tasks (job_id, page_id, path) VALUES ({victim.job}, {own.page}, '/intruder')`, refused, refused},
	{"tasks", "update", `UPDATE tasks SET status = 'completed' WHERE job_id = {victim.job}`, refused, refused},
	{"tasks", "delete", `DELETE FROM tasks WHERE job_id = {victim.job}`, refused, refused},
	{"tasks", "truncate", `TRUNCATE tasks`, refused, refused},
	{"tasks", "move one's own task into the victim's job",
		`UPDATE tasks SET job_id = {victim.job} WHERE id = {own.task}`, refused, refused},

	{"job_share_links", "select", `SELECT id, token FROM job_share_links WHERE job_id = {victim.job}`, noRows, refused},
	{"job_share_links", "insert a link to the victim's job",
		`INSERT INTO job_share_links (job_id, created_by) VALUES ({victim.job}, {own.user})`, refused, refused},
	{"job_share_links", "insert a link to the victim's job in the victim's name",
		`INSERT INTO job_share_links (job_id, created_by) VALUES ({victim.job}, {victim.user})`, refused, refused},
	{"job_share_links", "update", `UPDATE job_share_links SET revoked_at = now() WHERE job_id = {victim.job}`, noRows, refused},
	{"job_share_links", "delete", `DELETE FROM job_share_links WHERE job_id = {victim.job}`, noRows, refused},
	{"job_share_links", "truncate", `TRUNCATE job_share_links`, refused, refused},
	// anon sees no link of its own to move: no rows.
	{"job_share_links", "move one's own link to the victim's job",
		`UPDATE job_share_links SET job_id = {victim.job} WHERE id = {own.link}`, refused, refused},

	{"job_shards", "select", `SELECT shard FROM job_shards WHERE job_id = {victim.job}`, noRows, refused},
	{"job_shards", "insert", `INSERT INTO job_shards (job_id, shard, capacity) VALUES ({victim.job}, 99, 1000)`, refused, refused},
	{"job_shards", "update", `UPDATE job_shards SET capacity = 1000 WHERE job_id = {victim.job}`, refused, refused},
	{"job_shards", "delete", `DELETE FROM job_shards WHERE job_id = {victim.job}`, refused, refused},
	{"job_shards", "truncate", `TRUNCATE job_shards CASCADE`, refused, refused},

	{"job_tallies", "select", `SELECT shard FROM job_tallies WHERE job_id = {victim.job}`, noRows, refused},
	{"job_tallies", "insert", `INSERT INTO job_tallies (job_id, shard) VALUES ({victim.job}, 99)`, refused, refused},
	{"job_tallies", "update", `UPDATE job_tallies SET releases = releases + 1000 WHERE job_id = {victim.job}`, refused, refused},
	{"job_tallies", "delete", `DELETE FROM job_tallies WHERE job_id = {victim.job}`, refused, refused},
	{"job_tallies", "truncate", `TRUNCATE job_tallies`, refused, refused},

	{"job_progress", "select", `SELECT job_id FROM job_progress WHERE job_id = {victim.job}`, noRows, refused},
}

// bind fills an attack's placeholders with quoted literals of own's and
// victim's rows.
func bind(t *testing.T, sql string, own, victim org) string {
	t.Helper()
	var pairs []string
	for _, side := range []struct {
		prefix string
		o      org
	}{{"own", own}, {"victim", victim}} {
		o := side.o
		for name, value := range map[string]string{
			"org":    o.ID.String(),
			"user":   o.User.String(),
			"domain": strconv.Itoa(int(o.Domain)),
			"page":   strconv.Itoa(int(o.Pages[0])),
			"job":    o.Job,
			"task":   o.Tasks[0],
			"link":   o.Link.String(),
		} {
			pairs = append(pairs, "{"+side.prefix+"."+name+"}", "'"+strings.ReplaceAll(value, "'", "''")+"'")
		}
	}
	out := strings.NewReplacer(pairs...).Replace(sql)
	if strings.ContainsAny(out, "{}") {
		t.Fatalf("unknown placeholder in %s", out)
	}
	return out
}

// TestNoOneReachesAnotherOrganisationsRows runs the attack matrix as the
// user of A against B, the user of B against A, and anon against both, each
// attempt in its own transaction that commits if the statement succeeds; then
// the superuser checks that no row of any table changed.
func TestNoOneReachesAnotherOrganisationsRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, pool *testDB) {
		a := seedOrg(t, pool, "a", 3)
		b := seedOrg(t, pool, "b", 3)
		before := snapshot(t, pool)

		type run struct {
			actor       actor
			own, victim org
		}
		runs := []run{
			{memberOf(a), a, b},
			{memberOf(b), b, a},
			// anon has no rows of its own; "own" is simply the other organisation.
			{anon(), a, b},
			{anon(), b, a},
		}
		want := map[string]outcome{}
		got := map[string]outcome{}
		for _, r := range runs {
			for _, at := range attacks {
				key := fmt.Sprintf("%s -> %s: %s %s", r.actor.Name, r.victim.Name, at.Table, at.Name)
				want[key] = at.Authenticated
				if r.actor.Role == "anon" {
					want[key] = at.Anon
				}
				sql := bind(t, at.SQL, r.own, r.victim)
				var tag string
				err := as(ctx, pool, r.actor, func(tx pgx.Tx) error {
					ct, err := tx.Exec(ctx, sql)
					tag = ct.String()
					if err == nil && ct.RowsAffected() > 0 {
						t.Logf("%s: %s\n%s", key, ct, sql)
						got[key] = someRows
					}
					return err
				})
				switch {
				case got[key] == someRows:
				case err == nil && strings.HasPrefix(tag, "TRUNCATE"):
					t.Logf("%s: succeeded\n%s", key, sql)
					got[key] = someRows
				case err == nil:
					got[key] = noRows
				case sqlState(err) == sqlStateRefused:
					got[key] = refused
				default:
					t.Logf("%s: %v\n%s", key, err, sql)
					got[key] = otherError
				}
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("outcomes of the attacks (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(before, snapshot(t, pool)); diff != "" {
			t.Errorf("rows changed by the attacks (-before +after):\n%s", diff)
		}
	})
}

// TestNoJobBorrowsAnotherOrganisationsDomain: the domains and pages policies
// show every domain one of the organisation's jobs points at, so a job a user
// could point at another organisation's domain (ids are serial, so
// guessable) would show that domain's name and every page crawled on it.
// Users cannot create or change jobs (jobs are created through the API as
// the service role), so the attempt is refused.
func TestNoJobBorrowsAnotherOrganisationsDomain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, pool *testDB) {
		a := seedOrg(t, pool, "a", 1)
		b := seedOrg(t, pool, "b", 3)
		var domains, pages int
		err := as(ctx, pool, memberOf(a), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO jobs (id, domain_id, organisation_id) VALUES ('borrowed', $1, $2)`,
				b.Domain, a.ID); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM domains WHERE id = $1`, b.Domain).Scan(&domains); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT count(*) FROM pages WHERE domain_id = $1`, b.Domain).Scan(&pages)
		})
		switch {
		case sqlState(err) == sqlStateRefused:
		case err != nil:
			t.Fatal(err)
		case domains != 0 || pages != 0:
			t.Errorf("a job of A pointing at B's domain shows A %d of B's domains and %d of its pages", domains, pages)
		}
	})
}
