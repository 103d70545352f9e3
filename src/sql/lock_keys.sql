-- Takes the append's transaction-level advisory locks in one pass, in the order of the (sorted)
-- keys, so that no two appends can wait for each other in a cycle. $1: keys, $2: exclusive flags.
SELECT CASE WHEN l.exclusive
            THEN pg_advisory_xact_lock(l.key)
            ELSE pg_advisory_xact_lock_shared(l.key)
       END
FROM unnest($1::bigint[], $2::boolean[]) AS l(key, exclusive)
