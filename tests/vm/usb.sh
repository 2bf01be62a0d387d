# Guest script of the usb source VM test (tests/source_usb_vm.rs), sourced by tests/vm/init after
# the USB gadget modules are loaded: the same test binary, run again, plays gadget and source.
mount -t configfs configfs /sys/kernel/config
KIRQ_VM_GUEST=1 /bin/kirq-test --exact usb_source_in_qemu_vm --nocapture --test-threads=1
echo "KIRQ-VM: exit $?"
