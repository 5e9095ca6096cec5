-- Schema check: one row per problem, columns (check, object, detail); no rows
-- means the schema passes. Plain PostgreSQL 15+ over pg_catalog, read-only, so
-- it runs the same from the Go tests (internal/testsuites/schemacheck) and from psql
-- against any database, Supabase included:
--
--     psql "$DATABASE_URL" -f sql/checks/schema_check.sql
--
-- The regular expressions below are written for standard_conforming_strings
-- = on, the default since PostgreSQL 9.1 (and on Supabase).
--
-- Scope: tables (and materialized views) in every schema the project owns:
-- all schemas except PostgreSQL's own (pg_*, information_schema), the ones
-- Supabase and its extensions manage (auth, storage, realtime, vault, ... the
-- list supabase/splinter excludes), and objects that belong to an extension.
--
-- The four rules follow the Supabase database linter, supabase/splinter:
--
-- unindexed_foreign_keys (splinter 0001)
--     Every foreign key needs an index whose leading key columns are exactly
--     the foreign key's columns, in the constraint's order. Without one,
--     deleting or updating a referenced row, and every join from the
--     referenced side, scans the referencing table. Only an index that can
--     serve that lookup counts: valid and ready (a failed CREATE INDEX
--     CONCURRENTLY leaves an invalid one behind, which the planner never
--     uses), not partial, btree or hash, and of the columns' own collations
--     (the planner cannot search a COLLATE "C" index for the default
--     collation's equality). An expression key never matches a column, and
--     INCLUDE columns are not keys; operator classes are not checked
--     (text_pattern_ops serves "=" too). splinter instead compares the
--     index's whole column list, INCLUDE columns too, with the foreign key's:
--     it rejects a longer index led by the columns and accepts a partial,
--     BRIN or other-collation one. When an index is led by the columns but
--     cannot serve, the detail says why.
--
-- auth_rls_initplan (splinter 0003)
--     A policy expression that calls auth.uid() (or any function in schema
--     auth) bare runs it once per row; written as (SELECT auth.uid()) it
--     becomes an InitPlan, run once per statement. How this is detected,
--     per policy, per expression (USING, WITH CHECK) and per auth function:
--       * calls: occurrences of "{FUNCEXPR :funcid <oid> " in the stored
--         expression tree (pg_policy.polqual/polwithcheck cast to text).
--         Matching by OID is exact: it does not depend on search_path,
--         spelling, quoting or string literals;
--       * wrapped calls: occurrences, in pg_get_expr's deparsed text with
--         string literals removed, of a scalar sub-select whose entire target
--         is the call, as PostgreSQL prints it: "( SELECT auth.uid() AS uid)",
--         optionally with casts "( SELECT (auth.uid())::text AS uid)". The
--         schema prefix is expected exactly when PostgreSQL prints it (the
--         function is not visible on the current search_path), so the result
--         does not depend on search_path either;
--       * the expression has a problem when calls > wrapped calls, so one
--         bare call is found even next to wrapped ones (splinter's text
--         match passes any expression containing "select auth.uid()").
--     Limits: a call counts as wrapped only when it is the sub-select's whole
--     target (plus casts); "(SELECT auth.jwt() ->> 'role')" or a sub-select
--     with FROM or WHERE around the call is reported although PostgreSQL
--     also evaluates some of those once: write "(SELECT auth.jwt()) ->> 'role'".
--     Arguments must contain no parentheses, and casts must print as
--     lower-case type names, else the call is reported (never missed). Calls
--     hidden inside other functions the policy calls, or made through an
--     operator, aggregate or window function, are not seen. A quoted
--     identifier whose text spells a wrapped call would be counted as one.
--
-- duplicate_index (splinter 0009)
--     Two valid indexes on one table with the same definition apart from the
--     name: access method, key and INCLUDE columns, expressions, predicate,
--     operator classes, collations, sort options (DESC, NULLS FIRST) and
--     uniqueness (UNIQUE, NULLS NOT DISTINCT, DEFERRABLE). Every write pays
--     for both; one can be dropped. Storage parameters (fillfactor) and
--     constraint ownership are ignored: an index that differs only there is
--     still a copy (a UNIQUE index on a primary key's columns duplicates it).
--     splinter groups pg_indexes.indexdef with the name cut out: the same
--     test, except that it counts fillfactor, ignores DEFERRABLE and also
--     compares invalid indexes.
--
-- multiple_permissive_policies (splinter 0006)
--     More than one PERMISSIVE policy for the same table, role and action:
--     PostgreSQL evaluates every one of them for every row and ORs them.
--     FOR ALL counts as SELECT, INSERT, UPDATE and DELETE, and TO public as
--     anon, authenticated and service_role, Supabase's API roles (splinter
--     expands it to every existing role without BYPASSRLS, so it skips
--     service_role). Role membership is not followed (a policy TO a role
--     does not count for that role's members). Restrictive policies are
--     ANDed and not counted.

WITH owned_schemas AS (
    SELECT n.oid, n.nspname
    FROM pg_catalog.pg_namespace n
    WHERE n.nspname NOT LIKE 'pg\_%'
      AND n.nspname NOT IN (
          'information_schema',
          '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_config', '_timescaledb_internal',
          'auth', 'cron', 'extensions', 'graphql', 'graphql_public', 'net', 'pgbouncer', 'pgmq',
          'pgroonga', 'pgsodium', 'pgsodium_masks', 'pgtle', 'realtime', 'repack', 'storage',
          'supabase_functions', 'supabase_migrations', 'tiger', 'topology', 'vault'
      )
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend d
          WHERE d.classid = 'pg_catalog.pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e'
      )
),
owned_tables AS (
    SELECT c.oid, format('%I.%I', s.nspname, c.relname) AS name
    FROM pg_catalog.pg_class c
    JOIN owned_schemas s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm')
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend d
          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      )
),
indexes AS (
    SELECT
        i.indexrelid,
        i.indrelid,
        ic.relname AS index_name,
        am.amname,
        i.indisvalid AND i.indisready AS valid,
        i.indpred IS NULL AS complete,
        i.indnkeyatts,
        -- int2vector and oidvector as 1-based arrays.
        string_to_array(i.indkey::text, ' ')::int2[] AS keys,
        string_to_array(i.indcollation::text, ' ')::oid[] AS collations,
        i.indkey::text AS indkey,
        i.indclass::text AS indclass,
        i.indcollation::text AS indcollation,
        i.indoption::text AS indoption,
        coalesce(pg_catalog.pg_get_expr(i.indexprs, i.indrelid), '') AS exprs,
        coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '') AS pred,
        i.indisunique,
        i.indnullsnotdistinct,
        i.indimmediate
    FROM pg_catalog.pg_index i
    JOIN owned_tables t ON t.oid = i.indrelid
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_catalog.pg_am am ON am.oid = ic.relam
),

-- Rule 0001.
foreign_keys AS (
    SELECT
        con.conrelid,
        t.name AS table_name,
        con.conname,
        con.conkey,
        cols.names,
        cols.collations
    FROM pg_catalog.pg_constraint con
    JOIN owned_tables t ON t.oid = con.conrelid
    CROSS JOIN LATERAL (
        SELECT
            string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) AS names,
            array_agg(a.attcollation ORDER BY k.ord) AS collations
        FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
    ) cols
    WHERE con.contype = 'f'
),
-- Indexes led by a foreign key's columns, with what stops each serving it.
foreign_key_indexes AS (
    SELECT
        fk.conrelid,
        fk.conname,
        ix.index_name,
        array_remove(ARRAY[
            CASE WHEN NOT ix.valid THEN 'invalid' END,
            CASE WHEN NOT ix.complete THEN 'partial' END,
            CASE WHEN ix.amname NOT IN ('btree', 'hash') THEN format('a %s index', ix.amname) END,
            CASE WHEN ix.collations[1:cardinality(fk.conkey)] <> fk.collations
                 THEN 'of another collation' END
        ], NULL) AS faults
    FROM foreign_keys fk
    JOIN indexes ix
      ON ix.indrelid = fk.conrelid
     AND cardinality(fk.conkey) <= ix.indnkeyatts
     AND ix.keys[1:cardinality(fk.conkey)] = fk.conkey
),
unindexed_foreign_keys AS (
    SELECT
        'unindexed_foreign_keys'::text AS "check",
        fk.table_name AS object,
        format('foreign key %I (%s) has no valid index led by its columns', fk.conname, fk.names)
            || coalesce((
                SELECT string_agg(format('; %I is %s', fi.index_name, array_to_string(fi.faults, ', ')),
                                  '' ORDER BY fi.index_name)
                FROM foreign_key_indexes fi
                WHERE fi.conrelid = fk.conrelid AND fi.conname = fk.conname
            ), '') AS detail
    FROM foreign_keys fk
    WHERE NOT EXISTS (
        SELECT 1 FROM foreign_key_indexes fi
        WHERE fi.conrelid = fk.conrelid AND fi.conname = fk.conname AND cardinality(fi.faults) = 0
    )
),

-- Rule 0003.
auth_functions AS (
    SELECT
        p.oid,
        p.proname,
        -- The deparsed call as a regular expression: schema-qualified unless
        -- the function is visible on search_path, name quoted as PostgreSQL
        -- quotes it, every non-word character escaped.
        CASE WHEN pg_catalog.pg_function_is_visible(p.oid) THEN '' ELSE 'auth\.' END
            || regexp_replace(quote_ident(p.proname), '(\W)', '\\\1', 'g') AS name_pattern
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'auth'
),
policy_expressions AS (
    SELECT
        t.name AS table_name,
        pol.polname,
        e.clause,
        e.tree::text AS tree,
        -- Deparsed text with string literals removed (quoted identifiers
        -- kept), so a literal spelling a call counts as nothing.
        regexp_replace(
            pg_catalog.pg_get_expr(e.tree, pol.polrelid),
            '("(?:[^"]|"")*")|''(?:[^'']|'''')*''', '\1', 'g'
        ) AS expr
    FROM pg_catalog.pg_policy pol
    JOIN owned_tables t ON t.oid = pol.polrelid
    CROSS JOIN LATERAL (VALUES ('USING', pol.polqual), ('WITH CHECK', pol.polwithcheck)) AS e(clause, tree)
    WHERE e.tree IS NOT NULL
),
auth_calls AS (
    SELECT
        pe.table_name,
        pe.polname,
        pe.clause,
        f.proname,
        (SELECT count(*) FROM regexp_matches(pe.tree, '\{FUNCEXPR :funcid ' || f.oid || ' ', 'g')) AS calls,
        (SELECT count(*) FROM regexp_matches(
            pe.expr,
            -- "( SELECT", opening parentheses of casts, the call with
            -- parenthesis-free arguments, ")::type" per cast, an optional
            -- alias, and the sub-select's closing parenthesis.
            '\( SELECT \(*' || f.name_pattern || '\([^()]*\)'
                || '(?:\)::[a-z_][a-z0-9_.]*(?: [a-z_][a-z0-9_]*)*(?:\(\d+(?:,\d+)?\))?(?:\[\])*)*'
                || '(?: AS (?:[a-z_][a-z0-9_]*|"(?:[^"]|"")*"))?\)',
            'g')) AS wrapped
    FROM policy_expressions pe
    JOIN auth_functions f ON pe.tree ~ ('\{FUNCEXPR :funcid ' || f.oid || ' ')
),
auth_rls_initplan AS (
    SELECT
        'auth_rls_initplan'::text AS "check",
        format('%s policy %I', table_name, polname) AS object,
        format('%s: %s of %s call(s) to auth.%s() not written as (SELECT auth.%s())',
               clause, calls - wrapped, calls, quote_ident(proname), quote_ident(proname)) AS detail
    FROM auth_calls
    WHERE calls > wrapped
),

-- Rule 0009.
duplicate_index AS (
    SELECT
        'duplicate_index'::text AS "check",
        t.name AS object,
        format('indexes %s are identical apart from their names',
               string_agg(quote_ident(ix.index_name), ', ' ORDER BY ix.index_name)) AS detail
    FROM indexes ix
    JOIN owned_tables t ON t.oid = ix.indrelid
    WHERE ix.valid
    GROUP BY t.name, ix.indrelid, ix.amname, ix.indnkeyatts, ix.indkey, ix.indclass, ix.indcollation,
             ix.indoption, ix.exprs, ix.pred, ix.indisunique, ix.indnullsnotdistinct, ix.indimmediate
    HAVING count(*) > 1
),

-- Rule 0006.
permissive_policy_grants AS (
    SELECT t.name AS table_name, pol.polname, r.rolname, a.action
    FROM pg_catalog.pg_policy pol
    JOIN owned_tables t ON t.oid = pol.polrelid
    CROSS JOIN LATERAL unnest(pol.polroles) AS pr(roleid)
    CROSS JOIN LATERAL unnest(
        CASE WHEN pr.roleid = 0 THEN ARRAY['anon', 'authenticated', 'service_role']
             ELSE ARRAY[pg_catalog.pg_get_userbyid(pr.roleid)::text] END
    ) AS r(rolname)
    CROSS JOIN LATERAL unnest(
        CASE pol.polcmd
            WHEN 'r' THEN ARRAY['SELECT']
            WHEN 'a' THEN ARRAY['INSERT']
            WHEN 'w' THEN ARRAY['UPDATE']
            WHEN 'd' THEN ARRAY['DELETE']
            WHEN '*' THEN ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']
        END
    ) AS a(action)
    WHERE pol.polpermissive
),
multiple_permissive_policies AS (
    SELECT
        'multiple_permissive_policies'::text AS "check",
        table_name AS object,
        format('role %s, action %s: permissive policies %s', quote_ident(rolname), action,
               string_agg(DISTINCT quote_ident(polname), ', ' ORDER BY quote_ident(polname))) AS detail
    FROM permissive_policy_grants
    GROUP BY table_name, rolname, action
    HAVING count(DISTINCT polname) > 1
)

SELECT "check", object, detail FROM unindexed_foreign_keys
UNION ALL
SELECT "check", object, detail FROM auth_rls_initplan
UNION ALL
SELECT "check", object, detail FROM duplicate_index
UNION ALL
SELECT "check", object, detail FROM multiple_permissive_policies
ORDER BY 1, 2, 3;
