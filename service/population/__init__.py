"""Population mode (`ckd-cds screen`) on Dask: FHIR Bulk Data NDJSON or folders of Bundles, larger than memory,
assessed per patient by the same engine as the CDS service (issue #16). See docs/population.md."""
