-- The problem list (issue 6 point 2, docs/problems.md): standing hazards and non-compliance
-- with rectification deadlines, and every change to them (who and when).
CREATE TABLE problems (
    id           bigserial PRIMARY KEY,
    site         text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    device       text,  -- NULL for site-level problems (not_compliant)
    kind         text NOT NULL CHECK (kind IN ('exit_blocked', 'detector_fault', 'detector_offline',
                                               'camera_offline', 'not_compliant', 'detector_untested')),
    status       text NOT NULL CHECK (status IN ('open', 'overdue', 'rectified')),
    opened_at    timestamptz NOT NULL,
    since        timestamptz NOT NULL,  -- when the condition began
    deadline     timestamptz NOT NULL,
    clear_since  timestamptz,           -- condition seen clear since; NULL while it holds
    by_hand      boolean NOT NULL DEFAULT false,  -- reopened by hand: not rectified automatically
    rectified_at timestamptz,
    closed_by    text,                  -- who closed it by hand; NULL when rectified automatically
    updated_at   timestamptz NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    CHECK ((status = 'rectified') = (rectified_at IS NOT NULL))
);
-- One problem per (site, device, kind) is unrectified at a time.
CREATE UNIQUE INDEX problems_one_open ON problems (site, coalesce(device, ''), kind) WHERE status <> 'rectified';
CREATE INDEX problems_site ON problems (site, id DESC);
-- The last closing by hand per key (it holds back reopening while the same condition lasts).
CREATE INDEX problems_closed_by_hand ON problems (site, kind, rectified_at DESC) WHERE closed_by IS NOT NULL;

CREATE TABLE problem_history (
    id         bigserial PRIMARY KEY,
    problem_id bigint NOT NULL REFERENCES problems (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    action     text NOT NULL CHECK (action IN ('opened', 'overdue', 'rectified', 'closed', 'reopened', 'note')),
    status     text NOT NULL,  -- the problem's status right after this change
    by         text NOT NULL,
    note       text
);
CREATE INDEX problem_history_problem ON problem_history (problem_id, id);
