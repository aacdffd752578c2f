-- Deal change feed: every committed insert, update or delete of a deal notifies the
-- 'deal_changes' channel with a small JSON payload (never the whole row: NOTIFY payloads
-- are capped at 8000 bytes). The service's feed LISTENs and filters by owner.

CREATE FUNCTION notify_deal_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rec deals;
BEGIN
    IF TG_OP = 'DELETE' THEN
        rec := OLD;
    ELSE
        rec := NEW;
    END IF;
    PERFORM pg_notify(
        'deal_changes',
        json_build_object(
            'op', lower(TG_OP),
            'id', rec.id,
            'owner_id', rec.owner_id,
            'stage_id', rec.stage_id,
            'version', rec.version
        )::text
    );
    RETURN NULL;
END;
$$;
CREATE TRIGGER deal_change_notify_trigger
    AFTER INSERT OR UPDATE OR DELETE ON deals
    FOR EACH ROW EXECUTE FUNCTION notify_deal_change();
