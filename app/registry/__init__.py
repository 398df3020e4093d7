"""The register: K-MISA signatories, their signatures, subgroups and the people who act for them."""
