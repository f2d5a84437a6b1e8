/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * The values of the kernel's include/dt-bindings/interrupt-controller/arm-gic.h
 * (interrupt specifier cell 0: GIC_SPI 0, GIC_PPI 1), which the Telechips
 * tcc807x-subcore-mbox.dtsi includes.
 */
#ifndef _RPROCD_TEST_DT_BINDINGS_ARM_GIC_H
#define _RPROCD_TEST_DT_BINDINGS_ARM_GIC_H

#include <dt-bindings/interrupt-controller/irq.h>

#define GIC_SPI 0
#define GIC_PPI 1

#endif
