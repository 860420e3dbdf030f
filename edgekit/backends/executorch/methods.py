"""Names of the constant methods edgekit writes into every ``.pte``: facts the program format has no field for.

Shared by the exporter (writes), the runtime and ``inspect`` (read). No imports.
"""

INPUT_NAMES = "edgekit_input_names"
OUTPUT_NAMES = "edgekit_output_names"
FIXED_BATCH = "edgekit_fixed_batch"  # 0: the batch is dynamic (1..the planned bound)
WEIGHTS = "edgekit_weight_census"  # JSON: weight elements per stored precision, measured by the build
