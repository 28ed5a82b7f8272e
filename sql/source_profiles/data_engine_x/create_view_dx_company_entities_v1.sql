-- dx_company_entities_v1 from entities.company_entities, every row: a company with no
-- company_id (a Clay import) reaches the pipeline and is dead-lettered (the contract requires
-- it). Column by column: docs/source_mapping_data_engine_x.md.
--! Template (lines starting --! are not printed): {schema} is an identifier quoted by the code.
CREATE OR REPLACE VIEW {schema}.dx_company_entities_v1 AS
SELECT
    c.org_id,
    c.company_id,
    c.entity_id,
    c.canonical_name,
    c.canonical_domain,
    c.linkedin_url,
    c.company_linkedin_id AS linkedin_page_id,
    c.industry,
    c.employee_count,
    c.revenue_band,
    c.hq_country,
    c.enrichment_confidence,
    c.last_enriched_at,
    c.last_operation_id,
    c.last_run_id,
    nullif(array_to_string(c.source_providers, ','), '') AS source_priority,
    c.record_version,
    c.updated_at
FROM entities.company_entities AS c;
