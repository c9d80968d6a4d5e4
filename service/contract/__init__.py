"""The contract between the API (`service/`) and the reconstruction worker (`worker/`).

Both sides import this package; neither imports the other's internals. It is torch- and
gmsh-free (numpy, pydantic, PyYAML and PyJWT only). One module per kind of thing:

- `keys`: every Redis key name and the consumer group;
- `fields`: every hash and stream field name, and the values of the status and kind fields;
- `codecs`: every encoder and decoder of what goes into Redis (frames, results, leases,
  control entries, stream ids);
- `scripts`: all the Lua scripts, their field names rendered from `fields`, registered once
  per Redis client;
- `session`: the resolved session configuration and the accepted methods and policies;
- `geometry`, `protocol`, `grid`: the specs of the session schema that the API validates and
  the worker builds its forward model from;
- `tokens`: the bearer-token scopes and claims (the API verifies them, clients mint them);
- `errors`: how both processes describe a configuration error.

See docs/service-api.md ("The contract package") and docs/recording-format.md.
"""
