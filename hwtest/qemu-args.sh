#!/bin/sh
# The machine, shared by mkdtb.sh (dumpdtb) and run.py: the DTB must be
# dumped with exactly the flags the bed boots with.  Usage: qemu-args.sh BOARD_DIR
# BOARD_DIR/memory is the window (guest-physical 0x60000000, 0x8000 bytes).
B=$1
echo "-M virt -cpu cortex-a57 -smp 1 -m 524320K" \
	"-object memory-backend-ram,id=m0,size=512M" \
	"-object memory-backend-file,id=m1,size=32K,mem-path=$B/memory,share=on" \
	"-numa node,nodeid=0,memdev=m0,cpus=0 -numa node,nodeid=1,memdev=m1" \
	"-display none -nic none"
