-- dx_person_entities_v1 from entities.person_entities: every contract column exists there.
-- Column by column: docs/source_mapping_data_engine_x.md.
--! Template (lines starting --! are not printed): {schema} is an identifier quoted by the code.
CREATE OR REPLACE VIEW {schema}.dx_person_entities_v1 AS
SELECT
    p.org_id,
    p.company_id,
    p.entity_id,
    p.full_name,
    p.first_name,
    p.last_name,
    p.linkedin_url,
    p.title,
    p.seniority,
    p.department,
    p.work_email,
    p.email_status,
    p.phone_e164,
    p.contact_confidence,
    p.last_enriched_at,
    p.last_operation_id,
    p.last_run_id,
    p.record_version,
    p.updated_at
FROM entities.person_entities AS p;
