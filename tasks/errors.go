package tasks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors the queue returns. Test for them with errors.Is; the messages
// returned wrap them with what was being done.
var (
	// ErrNoTasksAvailable: nothing is claimable right now.
	ErrNoTasksAvailable = errors.New("no tasks available")
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrJobNotFound: no job has that id.
	ErrJobNotFound = errors.New("unknown job")
	// ErrJobExists: CreateJob was given the id of a job that exists.
	// Nothing was written.
	ErrJobExists = errors.New("job exists already")
	// ErrInvalidTransition: the job or task is not in a status that allows
	// the change (resume a job that is not paused, enqueue into a finished
	// job, ...).
	ErrInvalidTransition = errors.New("invalid status transition")
	// ErrLeaseLost: the worker no longer holds the task: its lease expired
	// and it was rescued, or it was finished already. Nothing was written.
	ErrLeaseLost = errors.New("lease lost")
	// ErrInvalidArgument: the call's input was refused, before anything was
	// sent to the database or by one of its constraints (a user that does
	// not exist, say); nothing was written. The error is an *ArgumentError.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnavailable: the database could not be reached, the connection was
	// lost, or no pooled connection became free in time.
	ErrUnavailable = errors.New("database unavailable")
	// ErrTimeout: a statement or lock timeout ended the statement; it was
	// rolled back.
	ErrTimeout = errors.New("database timeout")
	// ErrConflict: the database aborted the transaction to resolve a
	// deadlock or serialization failure; it was rolled back and may be
	// retried.
	ErrConflict = errors.New("database conflict")
	// ErrStartupRefused: the server refused a session setting sent as a
	// startup parameter, as a transaction pooler (PgBouncer, Supavisor)
	// does: connect in pooler mode (db.Options.Pooler), which sends none.
	// Retrying as before does not help.
	ErrStartupRefused = errors.New("startup parameter refused")
)

// ArgumentError says which argument was refused and why.
type ArgumentError struct {
	Arg    string
	Reason string
}

func (e *ArgumentError) Error() string {
	return fmt.Sprintf("invalid argument %s: %s", e.Arg, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *ArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

func invalid(arg, reason string, a ...any) error {
	return &ArgumentError{Arg: arg, Reason: fmt.Sprintf(reason, a...)}
}

// interpretError turns driver errors into the queue's sentinels, keeping the
// driver error in the chain for logs. It, ConnectError and refusedJob are
// the only places that look at driver error types, SQLSTATE codes or
// constraint names.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57014", "55P03": // query_canceled (statement_timeout), lock_not_available (lock_timeout)
			return fmt.Errorf("%w: %w", ErrTimeout, err)
		case "40P01", "40001": // deadlock_detected, serialization_failure
			return fmt.Errorf("%w: %w", ErrConflict, err)
		case "57P01", "57P02", "57P03", "08000", "08003", "08006", "53300":
			// admin_shutdown, crash_shutdown, cannot_connect_now, connection
			// exceptions, too_many_connections
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		case "22P05", "22021": // untranslatable_character, character_not_in_repertoire
			return fmt.Errorf("%w: %w", &ArgumentError{Arg: "text", Reason: "not storable in the database's encoding"}, err)
		}
		if refusedAtStartup(pgErr) {
			return fmt.Errorf("%w: %w", ErrStartupRefused, err)
		}
		// A FATAL connection exception ends the session: a pooler that is
		// full (PgBouncer's query_wait_timeout, max_client_conn: 08P01)
		// or a server going away.
		if pgErr.Severity == "FATAL" && strings.HasPrefix(pgErr.Code, "08") {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The caller's own context ended: theirs to handle, not an outage.
		return err
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.SafeToRetry(err),
		errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// InterpretError is interpretError for the statements callers run on the
// queue's pool themselves (db.DbQueue.Execute's transactions): driver errors
// become the queue's sentinels, other errors pass through unchanged.
func InterpretError(err error) error { return interpretError(err) }

// refusedAtStartup tells a pooler's refusal of a startup parameter
// (PgBouncer: "unsupported startup parameter: statement_timeout", 08P01)
// from other protocol errors.
func refusedAtStartup(pgErr *pgconn.PgError) bool {
	return pgErr.Code == "08P01" && strings.Contains(pgErr.Message, "unsupported startup parameter")
}

// ConnectError is the queue's reading of a failure to connect, for callers
// that connect outside its statements (db.Open's ping):
// ErrStartupRefused when a pooler refused a startup parameter, else
// ErrUnavailable; the driver's error stays in the chain.
func ConnectError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && refusedAtStartup(pgErr) {
		return fmt.Errorf("%w: %w", ErrStartupRefused, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// refusedJob turns the constraints a new job can break into typed errors.
func refusedJob(err error, spec JobOptions) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.ConstraintName {
	case "jobs_pkey":
		return fmt.Errorf("%w: %q", ErrJobExists, spec.ID)
	case "jobs_user_id_fkey":
		return invalid("spec.UserID", "no user %s", spec.UserID)
	case "jobs_organisation_id_fkey":
		return invalid("spec.OrganisationID", "no organisation %s", spec.OrganisationID)
	}
	return err
}
