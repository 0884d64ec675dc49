"""The page reader (page bytes to page result), the result containers and their ALTO / PAGE-XML / hOCR forms."""
