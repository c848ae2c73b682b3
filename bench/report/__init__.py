"""Reports built from records: tables, statistics, strata, figures and the static site."""
