-- The objects a tenant's jobs created (ClickUp tasks by `task_id`), looked up when a later
-- job of a tenant names one: only the tenant that created an object may change it.
CREATE INDEX effects_created_objects
    ON integration.effects (tenant, operation, (result ->> 'task_id'))
    WHERE state = 'done';
