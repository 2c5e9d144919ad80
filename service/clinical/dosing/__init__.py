"""Renal drug dosing at order time (renal dosing spec 1.0): the pure engine behind `ckd-renal-dosing-select`,
`ckd-renal-dosing-sign` and `ckd-cds dose`.

- `table`: the drug table (config/renal_dosing.yaml), the site's overlays, validation (RD-4, RD-10.2);
- `products`: the offline RxNorm product table with strengths and dose forms, and display parsing (RD-5.2, RD-5.3);
- `engine`: kidney measures (Cockcroft–Gault, eGFR, apixaban criteria), bands, dose checks, hedges, indicators and
  suggested products (RD-2, RD-3, RD-5.4–5.6, RD-6, RD-7.4 a).

No Flask, no FHIR JSON: `service.fhir.orders` reads draft orders and patient data into these types.
"""
