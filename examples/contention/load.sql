-- Bulk load for the contention benchmark: events number $1 to $2 (run with search_path set to
-- the store's schema). Events 1 to 1000 each open a boundary of their own ("old:<n>"); the others
-- belong to a course and a student. Events up to $3 also join the boundary "big".
INSERT INTO events (event_id, event_type, tags, payload)
SELECT gen_random_uuid(),
       (ARRAY['CourseDefined', 'StudentSubscribed', 'StudentUnsubscribed'])[1 + i % 3],
       CASE WHEN i <= 1000 THEN ARRAY['old:' || i]
            ELSE ARRAY['course:c' || i % 5000, 'student:s' || i % 20000]
       END || CASE WHEN i <= $3 THEN ARRAY['big'] ELSE ARRAY[]::text[] END,
       jsonb_build_object('course', 'c' || i % 5000, 'student', 's' || i % 20000, 'n', i)
FROM generate_series($1::bigint, $2::bigint) AS i
