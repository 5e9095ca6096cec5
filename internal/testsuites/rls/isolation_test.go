package rls_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
)

// sameRows compares row-key lists as sets, with nil and empty alike.
var sameRows = cmp.Options{
	cmpopts.SortSlices(func(a, b string) bool { return a < b }),
	cmpopts.EquateEmpty(),
}

// TestEachOrganisationSeesExactlyItsOwnRows seeds two organisations and
// reads every guarded table and the progress view as each of their users,
// as users who belong to no organisation, and as anon: each user sees
// exactly their organisation's rows (and, in users, only their own row),
// and everyone else sees nothing.
func TestEachOrganisationSeesExactlyItsOwnRows(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, pool *testDB) {
		a := seedOrg(t, pool, "a", 5)
		b := seedOrg(t, pool, "b", 7)
		// A second member of A: users shows each user only their own row.
		addMembers(t, pool, a, 1)
		// Signed in, with a users row but no organisation.
		orgless := uuid.New()
		exec(t, pool, `INSERT INTO users (id, email) VALUES ($1, 'orgless@example.com')`, orgless)

		everything := union(a.rows(), b.rows())
		everything["users"] = collect[string](t, pool, `SELECT id::text FROM users`)
		for _, r := range relations {
			got := collect[string](t, pool, r.Keys)
			if diff := cmp.Diff(everything[r.Name], got, sameRows); diff != "" {
				t.Fatalf("setup: the superuser's %s (-seeded +got):\n%s", r.Name, diff)
			}
		}

		orglessSees := nothing()
		orglessSees["users"] = []string{orgless.String()}
		for _, tc := range []struct {
			actor actor
			want  map[string][]string
		}{
			{memberOf(a), a.rows()},
			{memberOf(b), b.rows()},
			{actor{Name: "user of no organisation", Role: "authenticated", Sub: orgless}, orglessSees},
			{actor{Name: "user with no users row", Role: "authenticated", Sub: uuid.New()}, nothing()},
			{actor{Name: "authenticated without a JWT", Role: "authenticated"}, nothing()},
			{anon(), nothing()},
		} {
			t.Run(strings.ReplaceAll(tc.actor.Name, " ", "_"), func(t *testing.T) {
				if diff := cmp.Diff(tc.want, visible(t, pool, tc.actor), sameRows); diff != "" {
					t.Errorf("%s sees (-want +got):\n%s", tc.actor.Name, diff)
				}
			})
		}
	})
}
