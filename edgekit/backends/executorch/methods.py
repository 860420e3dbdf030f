"""What the exporter, the runtime and ``inspect`` share about a ``.pte``: the names of the constant methods
edgekit writes into every program (facts the format has no field for), and the tensor type codes. No imports.
"""

INPUT_NAMES = "edgekit_input_names"
OUTPUT_NAMES = "edgekit_output_names"
FIXED_BATCH = "edgekit_fixed_batch"  # 0: the batch is dynamic (1..the planned bound)
WEIGHTS = "edgekit_weight_census"  # JSON: weight elements per stored precision, measured by the build

# c10::ScalarType codes numpy can hold, as programs store them and the runtime's TensorInfo.dtype() returns them.
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                7: "float64", 11: "bool"}
