"""An entry script with inference-schema decorators: numpy, pandas and standard Python types."""
import numpy as np
import pandas as pd
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])))
@input_schema("frame", PandasParameterType(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})))
@input_schema("factor", StandardPythonParameterType(2.0))
@output_schema(StandardPythonParameterType({"row_sums": [6.0, 15.0], "a_total": 3, "labels": ["x", "y"]}))
def run(data, frame, factor):
    if factor < 0:
        raise ValueError("negative factor")  # an error of run() itself, not of the input schema
    if not isinstance(data, np.ndarray) or not isinstance(frame, pd.DataFrame):
        raise TypeError(f"inference-schema did not convert the input: {type(data)}, {type(frame)}")
    return {
        "row_sums": (data.sum(axis=1) * factor).tolist(),
        "a_total": int(frame["a"].sum()),
        "labels": frame["b"].tolist(),
    }
