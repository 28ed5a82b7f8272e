SELECT watermark FROM _export_watermarks WHERE dataset = $dataset
