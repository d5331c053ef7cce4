-- The meshes' shared registry, in a database of its own (bindu-mesh creates its tables there).
CREATE DATABASE mesh_registry OWNER bindu;
