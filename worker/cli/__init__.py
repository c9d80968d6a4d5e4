"""The `eitmon` command line. Modules here import heavy libraries (torch, gmsh) only inside
command bodies, so that `eitmon api` stays torch-free."""
