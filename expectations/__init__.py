"""Great Expectations suites as code, one module per dataset (see DESIGN.md)."""
