-- Move a dataset's watermark forward, never backwards.
INSERT INTO _export_watermarks (dataset, watermark, updated_at)
VALUES ($dataset, $watermark, now())
ON CONFLICT (dataset) DO UPDATE SET
    watermark = greatest(_export_watermarks.watermark, excluded.watermark),
    updated_at = excluded.updated_at
