/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * The values the kernel's include/dt-bindings/interrupt-controller/irq.h
 * defines (only the ones the tcc807x .dtsi files and rprocd's snippet use).
 */
#ifndef _RPROCD_TEST_DT_BINDINGS_IRQ_H
#define _RPROCD_TEST_DT_BINDINGS_IRQ_H

#define IRQ_TYPE_NONE		0
#define IRQ_TYPE_EDGE_RISING	1
#define IRQ_TYPE_EDGE_FALLING	2
#define IRQ_TYPE_EDGE_BOTH	(IRQ_TYPE_EDGE_FALLING | IRQ_TYPE_EDGE_RISING)
#define IRQ_TYPE_LEVEL_HIGH	4
#define IRQ_TYPE_LEVEL_LOW	8

#endif
