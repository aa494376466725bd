"""A Modbus RTU slave for the driver tests: pymodbus's serial server on one end of a pty pair.

Usage: modbus_server.py PORT UNIT_ID. Unit UNIT_ID holds known values (see REGISTERS); any other
unit is silently ignored (``ignore_missing_devices=True``), like a bus where that unit is absent.
"""

import sys
import warnings

from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import StartSerialServer
from pymodbus.simulator import simcore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )


def _strict_get_device(self, device_id):  # type: ignore[no-untyped-def]
    """pymodbus 3.16's SimCore raises KeyError for an unknown unit, which defeats
    ignore_missing_devices (the handler only catches NoSuchIdException): restore the contract."""
    if device_id not in self.devices:
        raise NoSuchIdException(f"device_id {device_id} does not exist")
    return self.devices[device_id]


simcore.SimCore._SimCore__get_device = _strict_get_device

# address -> 16-bit words. 0: 21.5 degC x 10 (int16); 1: -5 (int16); 2-3: 123456 (uint32, big);
# 4-5: 3.5 (float32, big); input register 0: 4011 (uint16).
HOLDING = [215, 0xFFFB, 0x0001, 0xE240, 0x4060, 0x0000]
INPUT = [4011]


def main() -> None:
    port, unit = sys.argv[1], int(sys.argv[2])
    # pymodbus data blocks are 1-based internally: start at 1 so wire address 0 maps to word 0.
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, HOLDING + [0] * 10),
        ir=ModbusSequentialDataBlock(1, INPUT + [0] * 10),
    )
    context = ModbusServerContext(devices={unit: device}, single=False)
    print("READY", flush=True)
    StartSerialServer(
        context,
        port=port,
        baudrate=19200,
        parity="N",
        timeout=0.05,
        ignore_missing_devices=True,
    )


if __name__ == "__main__":
    main()
