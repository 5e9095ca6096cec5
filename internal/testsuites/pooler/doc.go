// Package pooler holds the tests that run the application through a
// transaction pooler: a real PgBouncer in pool_mode = transaction
// (internal/pgbouncertest), the local stand-in for Supabase's Supavisor on
// port 6543. It has no code of its own. The tests check what
// docs/operations/POOLERS.md promises:
//
//   - with db.Options{Pooler: true} the whole queue (claims, batches,
//     completions, failures, hand-backs, leases, maintenance, job status
//     changes, progress, the measurement queries, COPY) works exactly once
//     while 2 server connections are shared by 16 clients;
//   - the worker pool drains jobs through the pooler in poll-only mode;
//   - the default exec mode (named prepared statements) and session
//     settings sent at startup do not survive the pooler, while settings
//     on the role do;
//   - LISTEN through the pooler hears nothing, silently, and its
//     notifications go to whichever client holds the server connection.
package pooler
